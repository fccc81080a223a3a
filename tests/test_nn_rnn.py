import pytest
import torch
from torch import nn

from funcrl import Record
from funcrl.nn import GRU, LSTM, GRUCell, GRUModule, LSTMCell, LSTMModule, from_module


def test_gru_cell_hand_computed():
    # All weights zero, biases chosen so r = z = sigmoid(0) = 0.5 and n = tanh(b_in).
    p = {
        "weight_ih": torch.zeros(3, 1),
        "weight_hh": torch.zeros(3, 1),
        "bias_ih": torch.tensor([0.0, 0.0, 1.0]),
        "bias_hh": torch.tensor([0.0, 0.0, 2.0]),
    }
    h = torch.tensor([[4.0]])
    out = GRUCell(1, 1)(p, torch.zeros(1, 1), h)
    n = torch.tanh(torch.tensor(1.0 + 0.5 * 2.0))
    torch.testing.assert_close(out, (0.5 * n + 0.5 * 4.0).reshape(1, 1))


def test_lstm_cell_hand_computed():
    p = {
        "weight_ih": torch.zeros(4, 1),
        "weight_hh": torch.zeros(4, 1),
        "bias_ih": torch.tensor([0.0, 0.0, 1.0, 0.0]),
        "bias_hh": torch.zeros(4),
    }
    h, c = LSTMCell(1, 1)(p, torch.zeros(1, 1), (torch.zeros(1, 1), torch.ones(1, 1)))
    c_ref = 0.5 * 1.0 + 0.5 * torch.tanh(torch.tensor(1.0))
    torch.testing.assert_close(c, c_ref.reshape(1, 1))
    torch.testing.assert_close(h, (0.5 * torch.tanh(c_ref)).reshape(1, 1))


def test_cells_parity_torch():
    for ours, ref in [(GRUCell(3, 5), nn.GRUCell(3, 5)), (LSTMCell(3, 5), nn.LSTMCell(3, 5))]:
        p = from_module(ref)
        x, h = torch.randn(4, 3), torch.randn(4, 5)
        if isinstance(ref, nn.GRUCell):
            torch.testing.assert_close(ours(p, x, h), ref(x, h), atol=1e-6, rtol=1e-6)
        else:
            c = torch.randn(4, 5)
            for a, b in zip(ours(p, x, (h, c)), ref(x, (h, c))):
                torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    assert GRUCell(3, 5).init(0)["weight_hh"].abs().max() <= 1 / 5**0.5


def test_gru_lstm_parity_torch_multilayer():
    gru_ref = nn.GRU(3, 6, num_layers=2, batch_first=True)
    lstm_ref = nn.LSTM(3, 6, num_layers=2, batch_first=True)
    x = torch.randn(4, 7, 3)
    h0, c0 = torch.randn(4, 2, 6), torch.randn(4, 2, 6)
    y, h, h_all = GRU(3, 6, 2)(from_module(gru_ref), x, h0)
    y_ref, h_ref = gru_ref(x, h0.transpose(0, 1).contiguous())
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h, h_ref.transpose(0, 1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h_all[:, -1], h)
    y, (h, c), _ = LSTM(3, 6, 2)(from_module(lstm_ref), x, (h0, c0))
    y_ref, (h_ref, c_ref) = lstm_ref(x, (h0.transpose(0, 1).contiguous(), c0.transpose(0, 1)))
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c, c_ref.transpose(0, 1), atol=1e-5, rtol=1e-5)


def test_is_init_resets_equal_separate_runs():
    gru = GRU(2, 4)
    p = gru.init(0)
    x = torch.randn(3, 6, 2)
    h0 = torch.randn(3, 1, 4)
    is_init = torch.zeros(3, 6, 1, dtype=torch.bool)
    is_init[:, 4] = True
    y, h, _ = gru(p, x, h0, is_init)
    y1, _, _ = gru(p, x[:, :4], h0)
    y2, h2, _ = gru(p, x[:, 4:])  # fresh zero state
    torch.testing.assert_close(y, torch.cat([y1, y2], 1))
    torch.testing.assert_close(h, h2)
    # LSTM too, and with several batch dims.
    lstm = LSTM(2, 4)
    pl = lstm.init(1)
    xb = x.reshape(3, 1, 6, 2).expand(3, 2, 6, 2)
    init_b = is_init.reshape(3, 1, 6, 1).expand(3, 2, 6, 1)
    yb, _, _ = lstm(pl, xb, None, init_b)
    ya, _, _ = lstm(pl, x[:, 4:])
    torch.testing.assert_close(yb[:, 1, 4:], ya)


def test_gru_module_step_mode_matches_recurrent_mode():
    seq = GRUModule(2, 4, num_layers=2)
    step = GRUModule(2, 4, num_layers=2, recurrent_mode=True)
    p = seq.init(0)
    x = torch.randn(3, 5, 2)
    is_init = torch.zeros(3, 5, 1, dtype=torch.bool)
    is_init[:, 0] = True
    is_init[1, 3] = True
    # Roll out step by step, storing the incoming state the way a collector does (zero at resets).
    h = torch.randn(3, 2, 4)
    outs, stored = [], []
    for t in range(5):
        h = torch.where(is_init[:, t, :, None], torch.zeros_like(h), h)
        stored.append(h)
        rec = Record({"embed": x[:, t], "recurrent_state": h, "is_init": is_init[:, t]}, 1)
        rec = seq(p, rec)
        outs.append(rec["intermediate"])
        h = rec["next", "recurrent_state"]
    traj = Record(
        {"embed": x, "recurrent_state": torch.stack(stored, 1), "is_init": is_init}, batch_ndim=2
    )
    out = step(p, traj)
    torch.testing.assert_close(out["intermediate"], torch.stack(outs, 1), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out["next", "recurrent_state"][:, -1], h, atol=1e-6, rtol=1e-6)


def test_gru_module_parity_torchrl_recurrent():
    pytest.importorskip("torchrl", reason="TorchRL parity reference")
    from tensordict import TensorDict
    from torchrl.modules import GRUModule as RefGRUModule
    from torchrl.modules import set_recurrent_mode

    ref = RefGRUModule(input_size=2, hidden_size=4, in_key="embed", out_key="intermediate")
    ours = GRUModule(2, 4, recurrent_mode=True)
    params = from_module(ref)
    assert set(params) == {"gru"}
    x = torch.randn(2, 5, 2)
    is_init = torch.zeros(2, 5, 1, dtype=torch.bool)
    is_init[:, 0] = True
    is_init[0, 2] = True
    hidden = torch.zeros(2, 5, 1, 4)
    td = TensorDict({"embed": x, "is_init": is_init, "recurrent_state": hidden}, [2, 5])
    with set_recurrent_mode(True):
        out_ref = ref(td)
    out = ours(params, Record({"embed": x, "is_init": is_init, "recurrent_state": hidden}, 2))
    torch.testing.assert_close(out["intermediate"], out_ref["intermediate"], atol=1e-5, rtol=1e-5)
    # TorchRL keeps the true next state only at trajectory ends; they must agree there.
    ends = torch.zeros(2, 5, dtype=torch.bool)
    ends[:, -1] = True
    ends[0, 1] = True
    torch.testing.assert_close(
        out["next", "recurrent_state"][ends],
        out_ref["next", "recurrent_state"][ends],
        atol=1e-5,
        rtol=1e-5,
    )


def test_lstm_module_keys_and_vmap_compile():
    mod = LSTMModule(3, 4)
    p = mod.init(0)
    rec = Record({"embed": torch.randn(5, 3), "is_init": torch.ones(5, 1, dtype=torch.bool)}, 1)
    out = mod(p, rec)
    assert out["intermediate"].shape == (5, 4)
    assert out["next", "recurrent_state_h"].shape == (5, 1, 4)
    assert out["next", "recurrent_state_c"].shape == (5, 1, 4)
    gru = GRU(3, 4)
    params = torch.func.vmap(lambda s: gru.init(0), randomness="same")(torch.arange(2))
    x = torch.randn(2, 5, 6, 3)
    ys = torch.func.vmap(lambda p, x: gru(p, x)[0])(params, x)
    torch.testing.assert_close(
        ys[1], gru({"layers": [{k: v[1] for k, v in params["layers"][0].items()}]}, x[1])[0]
    )
    torch._dynamo.reset()
    pg = gru.init(0)
    f = torch.compile(lambda p, x: gru(p, x)[0], fullgraph=True)
    torch.testing.assert_close(f(pg, x[0, :, :3]), gru(pg, x[0, :, :3])[0], atol=1e-6, rtol=1e-6)


def test_errors():
    with pytest.raises(ValueError, match="is_init"):
        GRU(2, 3)(GRU(2, 3).init(0), torch.randn(4, 5, 2), None, torch.zeros(4, 5))
    with pytest.raises(
        ValueError,
        match=r"GRU\(input_size=2, hidden_size=3\): input x has shape \(4, 5, 3\), expected \[\.\.\., \*, 2\]",
    ):
        GRU(2, 3)(GRU(2, 3).init(0), torch.randn(4, 5, 3))
