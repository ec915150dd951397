"""The slot store's grouped-query attention (``decoding.attention``) and how ``HFDecoder`` groups
a step's feeds (``plan``).

Oracles: attention written out with every key/value head repeated for its query heads (fp64),
and, for ``plan``, every contiguous grouping of the sorted widths priced by hand.
"""

import itertools
from types import SimpleNamespace

import pytest
import torch
from conftest import make_tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st

from latentseek_fast.decoding import attention
from latentseek_fast.decoding.drafts import ForwardCost
from latentseek_fast.decoding.model import hidden_states, new_cache
from latentseek_fast.decoding.slots import HFDecoder


@pytest.fixture(scope="module")
def llama64():
    return make_tiny_model("llama", tie=False, seed=0, dtype=torch.float64)


@pytest.mark.parametrize("mask_kind", ["bool", "additive"])
@pytest.mark.parametrize("width", [1, 5])
def test_slot_attention_equals_repeated_heads(mask_kind, width):
    """Ragged rows (each attends to its own cached prefix and its fed positions), 6 query heads
    over 2 key/value heads, fp64: equal to attention over repeated heads."""
    g = torch.Generator().manual_seed(1)
    B, Hq, Hkv, S, D = 3, 6, 2, 11, 8
    q = torch.randn(B, Hq, width, D, generator=g, dtype=torch.float64)
    k = torch.randn(B, Hkv, S, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, Hkv, S, D, generator=g, dtype=torch.float64)
    lengths = torch.tensor([0, 3, S - width])
    positions = lengths[:, None] + torch.arange(width)[None, :]
    allowed = (torch.arange(S)[None, None, :] <= positions[:, :, None])[:, None]  # [B, 1, W, S]
    additive = torch.zeros(allowed.shape, dtype=torch.float64)
    additive.masked_fill_(~allowed, torch.finfo(torch.float64).min)
    mask = allowed if mask_kind == "bool" else additive
    module = SimpleNamespace(num_key_value_groups=Hq // Hkv, training=False)
    got, none = attention.slot_gqa_attention(module, q, k, v, mask, scaling=0.3)
    # the oracle: every key/value head repeated for its query heads, softmax in fp64
    kr, vr = (x.repeat_interleave(Hq // Hkv, dim=1) for x in (k, v))
    want = (torch.softmax(q @ kr.transpose(-1, -2) * 0.3 + additive, dim=-1) @ vr).transpose(1, 2)
    assert none is None and got.shape == (B, width, Hq, D)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="softcap"):
        attention.slot_gqa_attention(module, q, k, v, mask, scaling=0.3, softcap=30.0)


def test_decoder_switches_attention_only_inside_its_forward(llama64):
    """On a CPU sdpa model the store's forwards run ``slot_gqa_attention`` (every latent still the
    same tokens decoded alone, fp64), and the model's setting is back to ``sdpa`` after each
    forward, also when the forward raises; an eager model keeps eager."""
    seen = []
    layer = llama64.model.layers[0].self_attn
    hook = layer.register_forward_pre_hook(lambda m, a: seen.append(m.config._attn_implementation))
    try:
        dec = HFDecoder(llama64)
        rows = [dec.add_row() for _ in range(2)]
        seqs = [[5, 9, 40, 7], [11, 3]]
        out = dec.step(dict(zip(rows, seqs)))
    finally:
        hook.remove()
    assert seen == [attention.NAME] and llama64.config._attn_implementation == "sdpa"
    for r, seq in zip(rows, seqs):
        with torch.no_grad():
            alone = hidden_states(llama64, torch.tensor([seq]), new_cache(llama64))[0]
        torch.testing.assert_close(out[r], alone, rtol=0, atol=1e-12)

    def boom(module, args):
        raise RuntimeError("boom")

    hook = layer.register_forward_pre_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            dec.step({rows[0]: [1]})
    finally:
        hook.remove()
    assert llama64.config._attn_implementation == "sdpa"

    eager = make_tiny_model("llama", hidden=16, layers=1, dtype=torch.float64)
    eager.config._attn_implementation = "eager"
    assert HFDecoder(eager).attn_config is None


def _brute_force(dec: HFDecoder, widths: list[int]) -> float:
    """The cheapest grouping of the sorted distinct widths into contiguous runs, every grouping
    priced by hand: the first run's forward spans every fed row, each later run its own rows;
    a forward costs, per piece, the fixed cost and each row's, plus once its padded positions
    and, when wider than one token, the many-token cost of each row."""
    ws = sorted(set(widths))
    best = float("inf")
    for k in range(len(ws)):
        for cuts in itertools.combinations(range(len(ws) - 1), k):
            ends = [ws[c] for c in cuts] + [ws[-1]]
            cost, low = 0.0, 0
            for g, end in enumerate(ends):
                rows = len(widths) if g == 0 else sum(low < w <= end for w in widths)
                pieces = -(-end // max(1, dec.max_positions // rows))
                c = dec.costs
                multi = c.multi if end > 1 else 0.0
                cost += pieces * (c.fixed + rows * c.row) + rows * (multi + end)
                low = end
            best = min(best, cost)
    return best


@settings(max_examples=150, deadline=None)
@given(
    widths=st.lists(st.integers(1, 40), min_size=1, max_size=70),
    fixed=st.floats(0.0, 100.0),
    row=st.floats(0.0, 3.0),
    multi=st.floats(0.0, 2.0),
    max_positions=st.sampled_from([64, 1024]),
)
def test_plan_is_the_cheapest_grouping(llama64, widths, fixed, row, multi, max_positions):
    """Random feed widths: ``plan``'s cost is the cheapest grouping's, and its cuts are widths
    fed, ending at the widest."""
    costs = ForwardCost(fixed=fixed, row=row, multi=multi)
    dec = HFDecoder(llama64, costs=costs, max_positions=max_positions)
    cuts, cost = dec.plan(widths)
    assert cuts == sorted(set(cuts)) and set(cuts) <= set(widths) and cuts[-1] == max(widths)
    assert cost == pytest.approx(_brute_force(dec, widths), rel=1e-9)
    assert dec.step_cost(widths) == cost


def test_one_wide_feed_does_not_widen_the_others(llama64):
    """11 rows feed one token, one row a 9-token prefix: at this CPU's cost model the wide row
    runs apart (not 12 x 9 positions), and every latent equals its tokens decoded alone; the
    decoder's trace records both forwards."""
    dec = HFDecoder(llama64)
    assert dec.plan([1, 1, 1, 2])[0] == [2]  # a forward costs more than padding 3 rows by one
    assert dec.plan([1] * 11 + [9])[0] == [1, 9]
    rows = [dec.add_row() for _ in range(12)]
    g = torch.Generator().manual_seed(2)
    first = {r: torch.randint(0, 49152, (3,), generator=g).tolist() for r in rows}
    dec.step(first)
    wide = torch.randint(0, 49152, (9,), generator=g).tolist()
    feeds = {r: [7] for r in rows[:-1]} | {rows[-1]: wide}
    before = (dec.forwards, dec.row_steps)
    dec.trace = []
    out = dec.step(feeds)
    assert (dec.forwards - before[0], dec.row_steps - before[1]) == (2, 12 + 1)
    # the benchmarks' trace: (start, seconds, slots computed, width, rows fed, tokens fed) per
    # forward; the first computes all 12 slots (the wide row's as masked padding) one token wide
    assert [t[2:] for t in dec.trace] == [(12, 1, 11, 11), (1, 9, 1, 9)]
    (start0, took0, *_), (start1, took1, *_) = dec.trace
    assert took0 > 0 and took1 > 0 and start1 >= start0 + took0
    for r in rows:
        with torch.no_grad():
            alone = hidden_states(llama64, torch.tensor([first[r] + feeds[r]]), new_cache(llama64))[0]
        torch.testing.assert_close(out[r], alone[3:], rtol=0, atol=1e-12)
