"""Drafted greedy decoding against plain greedy decoding, the n-gram index against brute force,
back-off and the feed-width cost model.

The decoder tests run tiny random fp64 models (ties and blocking noise are out of reach there), so
the drafted tokens must equal plain greedy's exactly and the latents to fp64 round-off.
"""

import pytest
import torch
from conftest import make_tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st

from latentseek_fast.decoding.decoder import CacheDecoder
from latentseek_fast.decoding.drafts import (
    BACKOFF_MAX,
    CPU_FORWARD_COST,
    GPU_FORWARD_COST,
    DraftPool,
    DraftRow,
    best_width,
)
from latentseek_fast.decoding.greedy import greedy
from latentseek_fast.decoding.rows import DecodeStats

V = 64  # small vocabulary: the random model's greedy text repeats in part, so drafts hit and miss
PROMPT_LENGTHS = (1, 5, 13)  # ragged prompts


@pytest.fixture(scope="module")
def model64():
    return make_tiny_model(vocab_size=V, hidden=32, dtype=torch.float64, seed=0, tie=False)


def _prompt(n: int) -> list[int]:
    g = torch.Generator().manual_seed(n)
    return torch.randint(3, V, (n,), generator=g).tolist()


def _decode(model, prompt, *, stop=frozenset(), max_tokens=40, row=None):
    """(Generation, decoder) of greedy decoding after ``prompt``, drafted when ``row`` is given."""
    dec = CacheDecoder(model)
    gen = greedy(model, prompt, stop=stop, max_tokens=max_tokens, drafts=row, decoder=dec)
    return gen, dec


def _assert_same(model, plain, drafted):
    (pg, pc), (dg, dc) = plain, drafted
    assert dg.ids == pg.ids and dg.stopped_by == pg.stopped_by
    torch.testing.assert_close(dg.latents, pg.latents, rtol=0, atol=1e-10)
    assert dc.length(0) == pc.length(0)
    # The caches hold the same positions: one more step from each gives the same state.
    torch.testing.assert_close(dc.step({0: [7]})[0], pc.step({0: [7]})[0], rtol=0, atol=1e-10)


def _corrupt(tokens: list[int], every: int) -> list[int]:
    return [(t + 1) % V if i % every == every - 1 else t for i, t in enumerate(tokens)]


@pytest.mark.parametrize("n", PROMPT_LENGTHS)
@pytest.mark.parametrize("k", [1, 3, 8])
@pytest.mark.parametrize("source", ["own", "exact", "corrupt"])
def test_drafted_decoding_equals_plain_greedy(model64, n, k, source):
    prompt = _prompt(n)
    plain = _decode(model64, prompt)
    truth = plain[0].ids
    docs = {"own": [], "exact": [prompt + truth], "corrupt": [prompt + _corrupt(truth, 3)]}[source]
    row = DraftPool(docs).row(prompt, k=k)
    drafted = _decode(model64, prompt, row=row)
    _assert_same(model64, plain, drafted)
    gen = drafted[0]
    assert len(truth) == 1 + gen.forwards + gen.accepted  # each forward: accepted + 1 own
    assert gen.forwards < len(truth) - 1  # drafts were accepted: fewer forwards than tokens
    if source == "exact":
        assert gen.accepted >= len(truth) // 4
    if source == "corrupt":
        assert gen.drafted > gen.accepted > 0  # rejected drafts were rolled back


def _first_new(tokens: list[int], at_least: int) -> int:
    return next(i for i in range(at_least, len(tokens)) if tokens[i] not in tokens[:i])


@pytest.mark.parametrize("n", PROMPT_LENGTHS)
def test_stop_inside_an_accepted_draft(model64, n):
    prompt = _prompt(n)
    truth = _decode(model64, prompt)[0].ids
    s = _first_new(truth, 4)
    stop = frozenset({truth[s]})
    plain = _decode(model64, prompt, stop=stop)
    assert plain[0].ids == truth[: s + 1] and plain[0].stopped_by == "stop"
    row = DraftPool([prompt + truth]).row(prompt, k=8)
    drafted = _decode(model64, prompt, stop=stop, row=row)
    assert drafted[1].length(0) == n + s  # every position before the stop token
    _assert_same(model64, plain, drafted)
    gen = drafted[0]
    # The stop token came out of an accepted draft: the last forward accepted drafts past it.
    assert gen.forwards < s and gen.accepted >= s


@pytest.mark.parametrize("max_tokens", [1, 2, 3, 7, 9, 10, 17, 23])
def test_max_tokens_inside_a_draft(model64, max_tokens):
    prompt = _prompt(5)
    truth = _decode(model64, prompt)[0].ids
    plain = _decode(model64, prompt, max_tokens=max_tokens)
    row = DraftPool([prompt + truth]).row(prompt, k=8)
    drafted = _decode(model64, prompt, max_tokens=max_tokens, row=row)
    _assert_same(model64, plain, drafted)
    assert len(drafted[0].ids) == max_tokens and drafted[0].stopped_by == "length"


def test_k_zero_is_plain_decoding(model64):
    prompt = _prompt(5)
    row = DraftPool([prompt + list(range(3, 40))]).row(prompt, k=0)
    _assert_same(model64, _decode(model64, prompt), _decode(model64, prompt, row=row))
    assert row.proposed == 0


# --- the n-gram index against brute force ---------------------------------------------------


def _oracle(docs, context, own_from, k, max_n=4):
    """Longest n-gram ending ``context``, latest occurrence first: own text, then later documents."""
    for n in range(min(max_n, len(context)), 0, -1):
        gram = context[-n:]
        for i in range(len(context) - 1, max(own_from, n) - 1, -1):  # i: the follower's position
            if context[i - n : i] == gram:
                seq = list(context)
                for j in range(k):
                    seq.append(seq[i + j])
                return seq[len(context) :]
        for doc in reversed(docs):
            for i in range(len(doc) - 1, n - 1, -1):
                if doc[i - n : i] == gram:
                    return doc[i : i + k]
    return []


tokens = st.lists(st.integers(0, 3), max_size=24)


@settings(max_examples=300, deadline=None)
@given(
    docs=st.lists(tokens, max_size=4),
    context=tokens,
    grown=tokens,
    k=st.integers(0, 10),
    index_context=st.booleans(),
    max_n=st.integers(1, 5),
)
def test_ngram_index_matches_brute_force(docs, context, grown, k, index_context, max_n):
    pool = DraftPool(docs, max_n=max_n)
    row = DraftRow(pool, context, k=k, index_context=index_context)
    row.extend(grown)
    own_from = 0 if index_context else len(context)
    assert row.match(k) == _oracle(docs, context + grown, own_from, k, max_n)
    if not grown:
        assert pool.propose(context, k) == _oracle(docs, context, 0, k, max_n)


def test_own_loop_drafts_its_own_continuation():
    row = DraftRow(None, [], k=8)
    row.extend([5, 6, 7, 5, 6, 7, 5])
    assert row.match(8) == [6, 7, 5, 6, 7, 5, 6, 7]


@pytest.mark.parametrize(
    "bad,match",
    [({"k": -1}, "k=-1"), ({"k": 2.0}, "k=2.0"), ({"k": True}, "k=True")],
)
def test_row_rejects_bad_k(bad, match):
    with pytest.raises(ValueError, match=match):
        DraftRow(None, [1, 2], **bad)
    with pytest.raises(ValueError, match="max_n=0"):
        DraftPool(max_n=0)


# --- back-off --------------------------------------------------------------------------------


def test_backoff_doubles_pauses_and_resets_on_a_hit():
    row = DraftRow(None, [1, 1, 1, 1], k=4, index_context=True)  # always has a match
    drafted_at = []
    for step in range(300):
        d = row.propose()
        if d:
            drafted_at.append(step)
            row.observe(len(d), 0)
    gaps = [b - a - 1 for a, b in zip(drafted_at, drafted_at[1:])]
    expected = [min(1 << i, BACKOFF_MAX) for i in range(len(gaps))]
    assert gaps == expected
    # A draft accepted (even in part) ends the back-off: the next forward drafts again.
    while not row.propose():
        pass
    row.observe(4, 1)
    assert row.propose() and row.misses == 0


class _Liar(DraftRow):
    """Drafts that are always wrong at their first token (it knows the true continuation)."""

    def __init__(self, truth, prompt, k):
        super().__init__(None, prompt, k=k)
        self.truth, self.start = truth, len(prompt)

    def match(self, k):
        nxt = self.truth[len(self.tokens) - self.start]
        return [(nxt + 1) % V] * k


def test_backoff_bounds_the_cost_of_failing_drafts(model64):
    prompt = _prompt(5)
    n = 120
    truth = _decode(model64, prompt, max_tokens=n + 1)[0].ids
    plain = _decode(model64, prompt, max_tokens=n)
    fed = []
    handle = model64.model.register_forward_pre_hook(
        lambda m, a, kw: fed.append(kw["input_ids"].shape[1]), with_kwargs=True
    )
    try:
        drafted = _decode(model64, prompt, max_tokens=n, row=_Liar(truth, prompt, 8))
    finally:
        handle.remove()
    _assert_same(model64, plain, drafted)
    wasted = sum(fed[1:]) - (n - 1)  # positions fed beyond plain decoding's one per forward
    assert drafted[0].accepted == 0 and drafted[0].forwards == n - 1
    assert 0 < wasted <= 8 * 7  # drafts tried at most ~log2(n) times: pauses 1, 2, 4, ..., 64


def test_decode_stats_of_plain_generation(model64):
    stats = DecodeStats()
    stats.add(_decode(model64, _prompt(5), max_tokens=9)[0])
    assert stats.to_dict() == {"tokens": 9, "forwards": 8, "drafted": 0, "accepted": 0, "reused": 0}


def test_drafted_decoder_validates_max_tokens(model64):
    with pytest.raises(ValueError, match="max_tokens=0"):
        greedy(model64, [4, 5], stop=frozenset(), max_tokens=0, drafts=DraftRow(None, [4, 5]))


# -- draft_policy "cost": how many drafts a forward feeds ---------------------------------------


def _expected_accepted(cut: int, q: float) -> float:
    """Mean accepted drafts of ``cut`` fed, each accepted with chance ``q`` after its predecessors:
    the acceptance-length distribution summed term by term (an oracle apart from ``best_width``'s
    running product)."""
    probs = [q**a * (1 - q) for a in range(cut)] + [q**cut]
    return sum(a * p for a, p in enumerate(probs))


def _oracle_width(drafting, producing, slots, fixed, floor):
    top = max([floor] + [1 + m for m, _ in drafting])
    rates = {
        w: (producing + sum(_expected_accepted(min(m, w - 1), q) for m, q in drafting))
        / (fixed + slots * max(w, floor))
        for w in range(1, top + 1)
    }
    best = max(rates.values())
    return rates, best


@settings(max_examples=300, deadline=None)
@given(
    drafting=st.lists(st.tuples(st.integers(1, 12), st.floats(0.0, 1.0)), max_size=6),
    extra=st.integers(0, 4),
    idle=st.integers(0, 4),
    fixed=st.floats(0.01, 200.0),
    floor=st.integers(1, 6),
)
def test_best_width_maximises_expected_tokens_per_cost(drafting, extra, idle, fixed, floor):
    """Against term-by-term expected acceptance, for a padded block (``floor``: a non-draft feed
    that wide pads it anyway)."""
    producing = len(drafting) + extra
    slots = max(1, producing + idle)
    w = best_width(drafting, producing=producing, cost=lambda v: fixed + slots * max(v, floor))
    rates, best = _oracle_width(drafting, producing, slots, fixed, floor)
    assert rates[w] >= best * (1 - 1e-9)  # the best width (up to rounding) ...
    assert all(rates[v] <= rates[w] * (1 + 1e-9) for v in rates if v < w)  # ... and no narrower one beats it


def test_best_width_cases():
    def block(slots, fixed, floor=1):
        return lambda w: fixed + slots * max(w, floor)

    assert best_width([(8, 1.0)], producing=1, cost=block(1, 5)) == 9  # a repetition loop: all
    assert best_width([(8, 0.0)], producing=1, cost=block(1, 5)) == 1  # nothing to copy: none
    assert best_width([(8, 0.5)], producing=1, cost=block(1, 5)) == 3  # (1 + .5 + .25) / (5 + 3)
    assert best_width([(8, 0.5)] * 16, producing=16, cost=block(16, 5)) == 1  # a wide block
    assert best_width([(8, 0.9)] * 16, producing=16, cost=block(16, 5)) < 5
    gpu = block(16, GPU_FORWARD_COST.fixed)
    assert best_width([(8, 0.9)] * 16, producing=16, cost=gpu) == 9  # reading weights dominates
    assert best_width([(3, 0.1)], producing=2, cost=block(2, 5, floor=6)) == 4  # padding is free: all 3
    assert best_width([], producing=3, cost=block(3, 5, floor=4)) == 1
    # this CPU's measured model (``CPU_FORWARD_COST``): 64 rows x w tokens cost 43 + 64 x
    # (0.66 + 0.49 [w > 1] + w) positions, so a second token per row pays only when it is accepted
    # with chance > ~0.64
    cpu = lambda w: CPU_FORWARD_COST.forward(64, w)  # noqa: E731
    assert best_width([(8, 0.60)] * 64, producing=64, cost=cpu) == 1
    assert best_width([(8, 0.65)] * 64, producing=64, cost=cpu) == 2
    assert best_width([(8, 0.70)] * 64, producing=64, cost=cpu) == 3
    with pytest.raises(ValueError, match="cost"):
        best_width([], producing=1, cost=lambda w: 0.0)


def test_acceptance_follows_recent_drafts():
    row = DraftRow(None, [1, 2, 3], k=8)
    assert row.acceptance == 0.5  # the prior
    for _ in range(6):
        row.observe(8, 8)  # every draft accepted: no rejection
    high = row.acceptance
    assert high > 0.95
    for _ in range(20):
        row.observe(4, 0)  # rejected outright again and again: the accepted runs fade
    assert row.acceptance < 0.25 < high


def test_draft_policy_is_validated():
    with pytest.raises(ValueError, match=r"draft_policy='x': allowed values are \('full', 'cost'\)"):
        DraftRow(None, [1], policy="x")


@pytest.mark.parametrize("n", PROMPT_LENGTHS)
@pytest.mark.parametrize("source", ["own", "exact", "corrupt"])
def test_cost_policy_decoding_equals_plain_greedy(model64, n, source):
    """The cost policy feeds fewer drafts per forward where they are rejected, never other tokens."""
    prompt = _prompt(n)
    plain = _decode(model64, prompt)
    truth = plain[0].ids
    docs = {"own": [], "exact": [prompt + truth], "corrupt": [prompt + _corrupt(truth, 3)]}[source]
    full = _decode(model64, prompt, row=DraftPool(docs).row(prompt, k=8))[0]
    drafted = _decode(model64, prompt, row=DraftPool(docs).row(prompt, k=8, policy="cost"))
    _assert_same(model64, plain, drafted)
    gen = drafted[0]
    assert len(truth) == 1 + gen.forwards + gen.accepted
    if source == "exact":  # the answer is in the pool: drafts are accepted
        assert gen.accepted >= len(truth) // 4
    if source == "corrupt":  # every third draft is wrong: shorter feeds, fewer rejected drafts fed
        assert gen.drafted / gen.forwards < full.drafted / full.forwards
        assert gen.drafted - gen.accepted < full.drafted - full.accepted
