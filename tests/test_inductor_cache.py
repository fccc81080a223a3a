"""funcrl._inductor: compiled loops load from Inductor's on-disk cache in a new process, a
changed loop body is never served a stale entry, and the dtype-rule singleton initialises only
when its tables grow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import torch

from funcrl import _inductor

_SCRIPT = textwrap.dedent(
    """
    import json, os, torch
    from torch._dynamo.utils import counters
    from funcrl import _inductor
    from funcrl.envs import pure

    c = float(os.environ["FUNCRL_TEST_C"])

    def run(x, xs):
        def body(carry, x):
            (h,) = carry
            h = torch.tanh(h * c + x)  # c only inside the scan body
            return (h.clone(),), h.clone()
        return pure.scan(body, (x,), xs)

    _inductor.prepare()
    options = {**_inductor.CACHEABLE_LOOPS, "cpp_wrapper": _inductor.CPP_WRAPPER_LOOPS}
    x, xs = torch.ones(3), torch.arange(12.0).reshape(4, 3) / 10
    (h,), ys = torch.compile(run, fullgraph=True, options=options)(x, xs)
    (h_ref,), ys_ref = run(x, xs)  # eagerly: pure.scan's Python loop
    print(json.dumps({
        "close": bool(torch.allclose(ys, ys_ref, atol=1e-6) and torch.allclose(h, h_ref, atol=1e-6)),
        "hit": counters["inductor"]["fxgraph_cache_hit"],
        "miss": counters["inductor"]["fxgraph_cache_miss"],
        "bypass": counters["inductor"]["fxgraph_cache_bypass"],
    }))
    """
)


def _run(cache_dir: str, c: float) -> dict:
    env = {
        **os.environ,
        "TORCHINDUCTOR_CACHE_DIR": cache_dir,
        "FUNCRL_TEST_C": repr(c),
        "OMP_NUM_THREADS": "1",
    }
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_scan_graph_is_cached_across_processes_and_keyed_on_its_body(tmp_path):
    cache = str(tmp_path / "inductor")
    first = _run(cache, 0.5)
    assert first == {"close": True, "hit": 0, "miss": 1, "bypass": 0}
    again = _run(cache, 0.5)
    assert again == {"close": True, "hit": 1, "miss": 0, "bypass": 0}
    # The same program with another constant inside the body: a new key, compiled, right values.
    other = _run(cache, 0.75)
    assert other == {"close": True, "hit": 0, "miss": 1, "bypass": 0}


def test_loops_are_cacheable_only_with_the_marking():
    # What CACHEABLE_LOOPS is for: unmarked, torch's caches bypass graphs holding these ops.
    from torch._higher_order_ops.scan import scan_op
    from torch._higher_order_ops.while_loop import while_loop_op

    assert not scan_op.cacheable() and not while_loop_op.cacheable()
    import torch._inductor.config as config

    with config.patch(_inductor.CACHEABLE_LOOPS):
        assert scan_op.cacheable() and while_loop_op.cacheable()


def test_dtype_rules_initialise_again_only_when_their_tables_grow(monkeypatch):
    import torch._inductor.lowering  # noqa: F401  (registers the rules the handler reads)
    from torch._inductor import utils
    from torch._inductor.dtype_propagation import DtypePropagationOpsHandler

    _inductor.prepare()
    handler = DtypePropagationOpsHandler()
    rule = handler.add
    monkeypatch.setattr(handler, "add", "sentinel")
    assert DtypePropagationOpsHandler() is handler
    assert handler.add == "sentinel"  # not re-initialised: the tables did not change

    name = "funcrl_test_op"
    monkeypatch.setitem(
        utils.op_dtype_propagation_rules, name, utils.op_dtype_propagation_rules["add"]
    )
    try:
        DtypePropagationOpsHandler()
        assert handler.add != "sentinel" and handler.add.keywords == rule.keywords
        assert getattr(handler, name).keywords == rule.keywords
    finally:
        monkeypatch.undo()
        if name in vars(handler):
            delattr(handler, name)
        DtypePropagationOpsHandler()  # re-initialised for the restored tables
    assert handler.add.keywords == rule.keywords


def test_prepare_is_idempotent():
    _inductor.prepare()
    init = torch._inductor.dtype_propagation.DtypePropagationOpsHandler.__init__
    _inductor.prepare()
    assert torch._inductor.dtype_propagation.DtypePropagationOpsHandler.__init__ is init
