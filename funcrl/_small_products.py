"""Products with a small ``N`` computed as their transpose (CPU): MKL runs ``b^T @ a^T`` far
faster than ``a @ b`` when ``N`` is tiny and ``M`` is not.

A PPO iteration on CartPole is full of products with 1-4 output columns: the heads'
``[B, 64] @ [64, 2]`` and ``[B, 64] @ [64, 1]``, and the first layer's weight gradient
``[64, B] @ [B, 4]`` (autograd's ``grad_out^T @ x`` for a 4-input layer). MKL (torch 2.13's
wheel, AMD Zen 3, one thread) runs those at 1-5 GFLOP/s, where the same product transposed,
``(x^T @ grad_out)^T``, takes a fraction of the time: for 16 seeds batched, ``[64, 128] @
[128, 4]`` 256 us against 54 us, ``[128, 64] @ [64, 2]`` 97 against 57 (``bench/products.py``
lists every product of the iteration with its eager cost).

:data:`SMALL_PRODUCTS` is a post-grad pass (``post_grad_custom_post_pass``) that rewrites each
``mm``/``bmm``/``addmm`` with ``N <= 4`` and ``M >= 64`` as ``matmul(b^T, a^T)^T``: the same
multiply-adds in another layout (MKL may round the sums differently). Products outside that range are left alone: with ``M = 4`` (a rollout
step) the transposed call was 2x slower. Inductor applies post-grad passes to every subgraph, so
a scan's body is rewritten too. :func:`funcrl.pure_train.seeded_iteration` uses it on a CPU.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

__all__ = ["MAX_N", "MIN_M", "SMALL_PRODUCTS", "small_products_pass"]

# A product is rewritten when its N is at most MAX_N and its M at least MIN_M.
MAX_N = 4
MIN_M = 64

_aten = torch.ops.aten


def swapped(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` as ``(b^T @ a^T)^T``; ``a`` ``[..., M, K]``, ``b`` ``[..., K, N]``."""
    return torch.matmul(b.transpose(-1, -2), a.transpose(-1, -2)).transpose(-1, -2)


def should_swap(a: Any, b: Any) -> bool:
    """Whether the product of (fake) tensors ``a`` ``[..., M, K]`` and ``b`` ``[..., K, N]`` is
    rewritten: float32/64 on a CPU, static sizes, ``N <= MAX_N`` and ``M >= MIN_M``."""
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return False
    if a.device.type != "cpu" or b.device.type != "cpu":
        return False
    if a.dtype not in (torch.float32, torch.float64) or b.dtype != a.dtype:
        return False
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    if not all(isinstance(d, int) for d in (m, k, n)):
        return False  # symbolic sizes: left to BLAS as they are
    return k > 0 and 0 < n <= MAX_N and m >= MIN_M


def _val(node: Any) -> Any:
    return node.meta.get("val") if isinstance(node, torch.fx.Node) else None


def _build_patterns() -> Any:
    from torch._inductor.pattern_matcher import (
        Arg,
        CallFunction,
        Match,
        PatternMatcherPass,
        register_graph_pattern,
    )

    patterns = PatternMatcherPass(pass_name="funcrl_small_products")

    def product(match: Match, a: torch.fx.Node, b: torch.fx.Node) -> None:
        if should_swap(_val(a), _val(b)):
            match.replace_by_example(swapped, [a, b])
            _REPLACED[0] += 1

    def product_plus(match: Match, bias: torch.fx.Node, a: torch.fx.Node, b: torch.fx.Node) -> None:
        node = match.nodes[-1]
        if node.kwargs.get("beta", 1) != 1 or node.kwargs.get("alpha", 1) != 1:
            return
        bias_val = _val(bias)
        if not should_swap(_val(a), _val(b)) or not isinstance(bias_val, torch.Tensor):
            return

        def repl(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return bias + swapped(a, b)

        match.replace_by_example(repl, [bias, a, b])
        _REPLACED[0] += 1

    for target in (_aten.mm.default, _aten.bmm.default):
        register_graph_pattern(CallFunction(target, Arg(), Arg()), pass_dict=patterns)(product)
    register_graph_pattern(
        CallFunction(_aten.addmm.default, Arg(), Arg(), Arg()), pass_dict=patterns
    )(product_plus)
    return patterns


_PATTERNS: Any = None
# Rewrites so far in this process: the pattern matcher's own count includes the products a
# handler declines.
_REPLACED = [0]


def small_products_pass(graph: torch.fx.Graph) -> int:
    """Rewrites the graph's ``mm``/``bmm``/``addmm`` nodes that :func:`should_swap` selects, in
    place; returns how many."""
    global _PATTERNS
    if _PATTERNS is None:
        _PATTERNS = _build_patterns()
    before = _REPLACED[0]
    _PATTERNS.apply(graph)
    return _REPLACED[0] - before


def _make_pass() -> Any:
    from torch._inductor.custom_graph_pass import CustomGraphPass

    class SmallProducts(CustomGraphPass):
        """:func:`small_products_pass` as Inductor's custom pass, keyed for its on-disk caches by
        this file's text."""

        def __call__(self, graph: torch.fx.Graph) -> None:
            small_products_pass(graph)

        def uuid(self) -> Any:
            with open(__file__, "rb") as f:
                return hashlib.sha256(f.read()).hexdigest()

    return SmallProducts()


SMALL_PRODUCTS: Any = _make_pass()
