"""The slot KV store (``HFDecoder``) against per-row decoding on a fresh cache, and
``slot_support``: which models it serves and why not.

Tiny random fp64 models: a batched step equals per-row decoding to ~1e-15.
"""

from types import SimpleNamespace

import pytest
import torch
from conftest import make_tiny_model

from latentseek_fast.decoding.drafts import ForwardCost
from latentseek_fast.decoding.model import hidden_states, new_cache
from latentseek_fast.decoding.slots import GROW_COLUMNS, HFDecoder, slot_support


@pytest.fixture(scope="module")
def llama64():
    return make_tiny_model("llama", tie=False, seed=0, dtype=torch.float64)


@pytest.mark.parametrize("mode", ["one-forward", "long-feeds-apart", "in-pieces"])
def test_decoder_step_equals_per_row_decoding(llama64, mode):
    """Ragged feeds, several tokens per row per step, rollback of one row, drop and slot reuse:
    every latent equals the one of the same tokens run alone through a fresh cache.
    ``long-feeds-apart``: at no fixed cost per forward, ``plan`` runs each feed width as a forward
    of its own (the first over every fed row, the wider ones over their gathered slots);
    ``in-pieces``: at most 6 positions per forward, so a 9-token feed runs in two pieces."""
    model = llama64
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, 49152, (n,), generator=g).tolist() for n in (5, 9, 3)]

    def alone(seq):
        with torch.no_grad():
            return hidden_states(model, torch.tensor([seq]), new_cache(model))[0]

    def close(a, b):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)

    # A small store, so that it grows while rows live.
    split = mode == "long-feeds-apart"
    dec = HFDecoder(
        model,
        initial_capacity=4,
        long_feed=2,
        costs=ForwardCost(fixed=0.0 if split else 1e9),  # every width apart, or one group
        max_positions=6 if mode == "in-pieces" else None,
    )
    a, b, c = (dec.add_row() for _ in range(3))
    s1 = dec.step({a: seqs[0][:2], b: seqs[1], c: seqs[2][:1]})
    s2 = dec.step({a: seqs[0][2:], c: seqs[2][1:2]})
    s3 = dec.step({c: seqs[2][2:]})
    close(torch.cat([s1[a], s2[a]]), alone(seqs[0]))
    close(s1[b], alone(seqs[1]))
    close(torch.cat([s1[c], s2[c], s3[c]]), alone(seqs[2]))
    assert [dec.length(r) for r in (a, b, c)] == [5, 9, 3]

    dec.rollback(b, 4)  # b forgets 5 positions; a and c keep theirs
    s4 = dec.step({b: [7, 8, 9], a: [11]})
    close(s4[b], alone(seqs[1][:4] + [7, 8, 9])[4:])
    close(s4[a], alone(seqs[0] + [11])[5:])
    s5 = dec.step({c: [12, 13]})
    close(s5[c], alone(seqs[2] + [12, 13])[3:])

    # apart: 3 + 2 + 1 + 2 + 1 widths; in pieces (at 1e9 per forward, the fewest forwards): the
    # first step as a and c (2 tokens each, one piece) then b alone (9 tokens: pieces of 6 and 3)
    assert dec.forwards == {"one-forward": 5, "long-feeds-apart": 9, "in-pieces": 3 + 1 + 1 + 1 + 1}[mode]
    dec.drop_row(a)
    d = dec.add_row()
    assert d == a and dec.length(d) == 0  # the freed slot is reused, empty
    s6 = dec.step({d: [1, 2, 3], b: [4]})
    close(s6[d], alone([1, 2, 3]))
    close(s6[b], alone(seqs[1][:4] + [7, 8, 9, 4])[7:])

    with pytest.raises(ValueError, match="row=7"):
        dec.rollback(7, 0)
    with pytest.raises(ValueError, match="length=9"):
        dec.rollback(b, 9)
    with pytest.raises(ValueError, match="no tokens"):
        dec.step({b: []})
    with pytest.raises(ValueError, match="max_positions=0"):
        HFDecoder(model, max_positions=0)


def test_decoder_fork_equals_feeding_the_prefix(llama64):
    """A row forked from another's first n positions continues exactly as if fed those n
    tokens itself; the source and other rows are untouched; bad forks are named."""
    model = llama64
    g = torch.Generator().manual_seed(2)
    prefix, tail_a, tail_b = (torch.randint(0, 49152, (n,), generator=g).tolist() for n in (7, 3, 4))

    def alone(seq):
        with torch.no_grad():
            return hidden_states(model, torch.tensor([seq]), new_cache(model))[0]

    dec = HFDecoder(model, initial_capacity=4)
    a, other = dec.add_row(), dec.add_row()
    dec.step({a: prefix + tail_a, other: [9, 9]})
    b = dec.add_row()
    dec.step({b: [1, 2]})  # b's own positions are dropped by the fork
    dec.fork(b, a, len(prefix))
    assert dec.length(b) == len(prefix) and dec.length(a) == len(prefix) + len(tail_a)
    out = dec.step({b: tail_b, a: [5], other: [6]})
    torch.testing.assert_close(out[b], alone(prefix + tail_b)[len(prefix) :], rtol=0, atol=1e-12)
    torch.testing.assert_close(out[a], alone(prefix + tail_a + [5])[-1:], rtol=0, atol=1e-12)
    torch.testing.assert_close(out[other], alone([9, 9, 6])[-1:], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="length=99"):
        dec.fork(b, a, 99)
    with pytest.raises(ValueError, match="itself"):
        dec.fork(a, a, 1)
    with pytest.raises(ValueError, match="row=7"):
        dec.fork(7, a, 1)


def test_decoder_store_grows_by_half_keeping_its_rows(llama64):
    """The KV store grows to what a step needs, by 1.5x or 256 columns at least (not doubling),
    slots by 1.5x or 4, and the rows' cached positions survive every growth."""
    model = llama64
    g = torch.Generator().manual_seed(1)
    seq = torch.randint(0, 49152, (302,), generator=g).tolist()
    dec = HFDecoder(model, initial_capacity=4)
    a = dec.add_row()
    shape = lambda: tuple(dec.store[0][0].shape)  # noqa: E731
    assert shape()[0] == 4 and shape()[2] == 4
    first = dec.step({a: seq[:300]})[a]
    assert shape()[2] == 300  # what the step needs: max(300, 1.5 x 4, 4 + 256)
    second = dec.step({a: seq[300:]})[a]
    assert shape()[2] == 300 + GROW_COLUMNS  # max(302, 1.5 x 300, 300 + 256)
    rows = [a] + [dec.add_row() for _ in range(4)]
    assert shape()[0] == 8 and shape()[2] == 556  # slots: max(5, 1.5 x 4, 4 + 4)
    with torch.no_grad():
        want = hidden_states(model, torch.tensor([seq]), new_cache(model))[0]
    torch.testing.assert_close(torch.cat([first, second]), want, rtol=0, atol=1e-12)
    nxt = dec.step({r: [5] for r in rows})
    with torch.no_grad():
        want_a = hidden_states(model, torch.tensor([seq + [5]]), new_cache(model))[0][-1:]
        want_new = hidden_states(model, torch.tensor([[5]]), new_cache(model))[0]
    torch.testing.assert_close(nxt[a], want_a, rtol=0, atol=1e-12)
    for r in rows[1:]:
        torch.testing.assert_close(nxt[r], want_new, rtol=0, atol=1e-12)


@pytest.mark.parametrize("arch", ["qwen2", "mistral"])
def test_slot_support_names_sliding_windows(arch):
    """Qwen2 lists sliding layers in ``layer_types``; Mistral has only ``sliding_window`` (its
    layers then all slide): the slot store, which masks full causal attention, refuses both."""
    model = make_tiny_model(arch, hidden=16, layers=1, sliding_window=4)
    named = "sliding_attention" if arch == "qwen2" else "sliding_window=4"
    assert named in slot_support(model)
    with pytest.raises(ValueError, match=f"{named}.*full causal attention only"):
        HFDecoder(model)


def test_slot_support_accepts_full_attention_and_names_other_implementations(llama64):
    assert slot_support(llama64) is None
    assert slot_support(make_tiny_model("qwen2", hidden=16, layers=1)) is None
    assert slot_support(make_tiny_model("mistral", hidden=16, layers=1)) is None  # no window
    flash = SimpleNamespace(config=SimpleNamespace(_attn_implementation="flash_attention_2"))
    assert "'flash_attention_2'" in slot_support(flash) and "sdpa" in slot_support(flash)


def test_long_feeds_alone_run_over_their_own_slots(llama64, monkeypatch):
    """A prompt fed while the other rows wait (as the first verifier prompt is, before the
    others fork it) is computed over its own slot, not padded across every occupied slot."""
    seen = []
    forward = HFDecoder._forward
    monkeypatch.setattr(HFDecoder, "_forward", lambda self, s, f: seen.append(list(s)) or forward(self, s, f))
    dec = HFDecoder(llama64)
    rows = [dec.add_row() for _ in range(4)]
    seq = torch.randint(0, 49152, (40,), generator=torch.Generator().manual_seed(3)).tolist()
    out = dec.step({rows[1]: seq})
    with torch.no_grad():
        want = hidden_states(llama64, torch.tensor([seq]), new_cache(llama64))[0]
    torch.testing.assert_close(out[rows[1]], want, rtol=0, atol=1e-12)
    dec.step({r: seq[:20] for r in rows[:3]})  # three of four rows: one forward over them alone
    assert seen == [[0], [0, 1, 2]]  # the fed rows were moved into the first slots


def test_rows_that_wait_leave_the_forward(llama64):
    """Rows with nothing to feed (waiting, or freed in the middle of the store) are not computed:
    each forward covers exactly the fed rows, moved into the first slots, and every latent still
    equals the same tokens decoded alone (fp64), through moves, forks, rollbacks and drops, over
    a random schedule."""
    model = llama64
    g = torch.Generator().manual_seed(5)
    rand = lambda n: torch.randint(0, 49152, (n,), generator=g).tolist()  # noqa: E731

    def alone(seq):
        with torch.no_grad():
            return hidden_states(model, torch.tensor([seq]), new_cache(model))[0]

    dec = HFDecoder(model, initial_capacity=4, long_feed=3)
    seqs: dict[int, list[int]] = {}
    for _ in range(6):
        seqs[dec.add_row()] = []
    fed_rows = computed = 0
    for step in range(14):
        if step == 5:  # a middle row finishes, a new one takes a handle, another forks a row
            dec.drop_row(2)
            del seqs[2]
            r = dec.add_row()
            seqs[r] = []
            dec.fork(r, 0, len(seqs[0]) - 1)
            seqs[r] = seqs[0][:-1]
        if step == 9:
            dec.rollback(1, 2)
            seqs[1] = seqs[1][:2]
        live = sorted(seqs)
        fed = [r for r in live if torch.rand(1, generator=g).item() < 0.5 or not seqs[r]] or live[:1]
        feeds = {r: rand(1 + int(torch.randint(0, 4, (1,), generator=g))) for r in fed}
        before = dec.row_steps
        out = dec.step(feeds)
        # every forward (two when long feeds run apart) spans fed rows only
        assert dec.row_steps - before <= 2 * len(fed)
        fed_rows += len(fed)
        computed += dec.row_steps - before
        for r, toks in feeds.items():
            seqs[r] = seqs[r] + toks
            torch.testing.assert_close(out[r], alone(seqs[r])[-len(toks) :], rtol=0, atol=1e-12)
            assert dec.length(r) == len(seqs[r])
    assert dec.moves > 0  # the schedule did move rows
    assert all(dec.slot_of[r] < len(dec.at) for r in seqs)
