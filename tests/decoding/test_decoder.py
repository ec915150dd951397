"""``CacheDecoder``: the ``Decoder`` interface over one transformers cache, against full forwards."""

import pytest
import torch
from conftest import make_tiny_model

from latentseek_fast.decoding.decoder import CacheDecoder
from latentseek_fast.decoding.model import hidden_states, new_cache


def _full(model, ids):
    with torch.no_grad():
        return model.model(torch.tensor([ids]))[0][0]


@pytest.mark.parametrize("arch,window", [("llama", None), ("mistral", 4)])
def test_steps_and_rollback_equal_full_forwards(arch, window):
    model = make_tiny_model(arch, vocab_size=64, hidden=16, sliding_window=window, dtype=torch.float64)
    seq = torch.randint(3, 64, (12,), generator=torch.Generator().manual_seed(1)).tolist()
    dec = CacheDecoder(model)
    row = dec.add_row()
    out = [dec.step({row: seq[:5]})[row], dec.step({row: seq[5:6]})[row], dec.step({row: seq[6:]})[row]]
    torch.testing.assert_close(torch.cat(out), _full(model, seq), rtol=0, atol=1e-12)
    assert dec.length(row) == 12 and dec.forwards == 3
    # one forward of one row of 3 tokens
    assert dec.step_cost([3]) == dec.costs.fixed + dec.costs.row + dec.costs.multi + 3
    dec.rollback(row, 2)  # past the window of 4
    torch.testing.assert_close(
        dec.step({row: [9, 9]})[row], _full(model, seq[:2] + [9, 9])[2:], rtol=0, atol=1e-12
    )


def test_one_row_and_its_errors(tiny):
    model, _ = tiny
    dec = CacheDecoder(model)
    assert dec.step({}) == {}
    row = dec.add_row()
    with pytest.raises(ValueError, match="one row"):
        dec.add_row()
    with pytest.raises(ValueError, match="row=1"):
        dec.step({1: [5]})
    with pytest.raises(ValueError, match="no tokens"):
        dec.step({row: []})
    dec.step({row: [5, 6, 7]})
    with pytest.raises(ValueError, match=r"rollback\(row=0, length=4\): row has 3 positions"):
        dec.rollback(row, 4)
    with pytest.raises(ValueError, match="cannot fork.*HFDecoder"):
        dec.fork(row, row, 1)
    dec.drop_row(row)
    with pytest.raises(ValueError, match=r"row=0: no such row \(live rows: \[\]\)"):
        dec.length(row)
    assert dec.add_row() == 0 and dec.length(0) == 0  # the next row starts empty


def test_continues_on_a_given_cache(tiny):
    model, _ = tiny
    cache = new_cache(model)
    hidden_states(model, torch.tensor([[5, 6, 7]]), cache)
    dec = CacheDecoder(model, cache)
    row = dec.add_row()
    assert dec.length(row) == 3
    torch.testing.assert_close(
        dec.step({row: [8]})[row], _full(model, [5, 6, 7, 8])[3:], rtol=1e-5, atol=1e-6
    )
