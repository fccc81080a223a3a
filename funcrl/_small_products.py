"""Weight gradients with a small ``N`` computed as their transpose (CPU): MKL runs
``x^T @ grad_out`` far faster than ``grad_out^T @ x`` when ``x`` has a few columns.

Autograd's weight gradient of a linear layer with a few inputs is ``grad_out^T @ x``: ``[64, B]
@ [B, 4]`` for CartPole's first layer, ``[256, B] @ [B, 4]`` for SAC's critic on Pendulum. Its
left operand is a transposed view (``M`` contiguous) and it has 1-4 output columns, a layout
MKL (torch 2.13's wheel, AMD Zen 3, one thread) runs at 4-5 GFLOP/s. The same product computed
as ``(x^T @ grad_out)^T`` took a fraction of the time, eagerly: ``[64, 128] @ [128, 4]`` for 16
seeds batched 256 us against 54 us, ``[256, 256] @ [256, 4]`` 134 against 36, ``[256, 256] @
[256, 3]`` 333 against 38 (``bench/products.py`` lists every product of a PPO iteration with its
eager cost).

:data:`SMALL_PRODUCTS` is a post-grad pass (``post_grad_custom_post_pass``) that rewrites each
``mm``/``bmm``/``addmm`` whose left operand is column-major, with ``N <= 4`` and ``M >= 64``, as
``matmul(b^T, a^T)^T``: the same multiply-adds in the layout MKL handles well (the sums may
round differently). Other products are left alone. A row-major left operand (a forward head,
``h @ W^T``) was slower transposed on one seed (``[128, 64] @ [64, 2]``: 8.5 us against 13.0),
and so was ``M = 4`` (a rollout step). Inductor applies post-grad passes to every subgraph, so a
scan's body is rewritten too. :func:`funcrl.pure_train.seeded_iteration` uses it on a CPU.
:mod:`funcrl.jit` does not: in SAC's compiled update step with Pendulum's sizes the step was 6%
slower with it (docs/results.md, "Small matrix products").
"""

from __future__ import annotations

import functools
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
    rewritten: float32/64 on a CPU, static sizes, ``a`` column-major (``M`` contiguous),
    ``N <= MAX_N`` and ``M >= MIN_M``."""
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return False
    if a.device.type != "cpu" or b.device.type != "cpu":
        return False
    if a.dtype not in (torch.float32, torch.float64) or b.dtype != a.dtype:
        return False
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    if not all(isinstance(d, int) for d in (m, k, n)):
        return False  # symbolic sizes: left to BLAS as they are
    if not (k > 0 and 0 < n <= MAX_N and m >= MIN_M):
        return False
    return a.stride(-2) == 1 and a.stride(-1) != 1


def _val(node: Any) -> Any:
    return node.meta.get("val") if isinstance(node, torch.fx.Node) else None


def _selected(node: torch.fx.Node) -> bool:
    """Whether ``node`` is an ``mm``/``bmm`` or default-scaled ``addmm`` that
    :func:`should_swap` selects."""
    if node.op != "call_function":
        return False
    if node.target in (_aten.mm.default, _aten.bmm.default):
        a, b = node.args[:2]
    elif node.target is _aten.addmm.default:
        if node.kwargs.get("beta", 1) != 1 or node.kwargs.get("alpha", 1) != 1:
            return False
        if not isinstance(_val(node.args[0]), torch.Tensor):
            return False
        a, b = node.args[1:3]
    else:
        return False
    return should_swap(_val(a), _val(b))


@functools.cache
def _patterns() -> Any:
    from torch._inductor.pattern_matcher import (
        Arg,
        CallFunction,
        Match,
        PatternMatcherPass,
        register_graph_pattern,
    )

    patterns = PatternMatcherPass(pass_name="funcrl_small_products")

    def product(match: Match, a: torch.fx.Node, b: torch.fx.Node) -> None:
        if _selected(match.nodes[-1]):
            match.replace_by_example(swapped, [a, b])

    def bias_plus(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return bias + swapped(a, b)

    def product_plus(match: Match, bias: torch.fx.Node, a: torch.fx.Node, b: torch.fx.Node) -> None:
        if _selected(match.nodes[-1]):
            match.replace_by_example(bias_plus, [bias, a, b])

    for target in (_aten.mm.default, _aten.bmm.default):
        register_graph_pattern(CallFunction(target, Arg(), Arg()), pass_dict=patterns)(product)
    register_graph_pattern(
        CallFunction(_aten.addmm.default, Arg(), Arg(), Arg()), pass_dict=patterns
    )(product_plus)
    return patterns


def small_products_pass(graph: torch.fx.Graph) -> int:
    """Rewrites the graph's ``mm``/``bmm``/``addmm`` nodes that :func:`should_swap` selects, in
    place; returns how many.

    The count is read off the graph: a rewritten product's replacement has ``N`` >= ``MIN_M``,
    so it is never selected again.
    """

    def selected() -> int:
        return sum(_selected(node) for node in graph.nodes)

    before = selected()
    _patterns().apply(graph)
    return before - selected()


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
