"""``rows``: the acceptance rule, the decode step over many rows (drafted or not) against each row
decoded alone, forks, and the statistics.

Tiny random fp64 models: a padded, drafted step equals plain one-token decoding to round-off, so
tokens must be identical and latents equal to ~1e-10.
"""

import pytest
import torch
from conftest import make_tiny_model

from latentseek_fast.decoding.decoder import CacheDecoder
from latentseek_fast.decoding.drafts import GPU_FORWARD_COST, DraftPool
from latentseek_fast.decoding.greedy import greedy
from latentseek_fast.decoding.rows import DecodeStats, Row, accept, advance, run
from latentseek_fast.decoding.slots import HFDecoder
from latentseek_fast.ops.lpg_reference import top2_gap as top2_gaps

V = 64


@pytest.fixture(scope="module")
def model64():
    return make_tiny_model(vocab_size=V, hidden=32, dtype=torch.float64, seed=0, tie=False)


def _prompt(n: int, seed: int = 0) -> list[int]:
    return torch.randint(3, V, (n,), generator=torch.Generator().manual_seed(100 * seed + n)).tolist()


@pytest.mark.parametrize(
    "greedy_ids,drafts,kept",
    [
        ([4, 5, 6, 7], [4, 5, 6], 3),  # all kept; greedy's own token follows
        ([4, 5, 6, 7], [4, 9, 6], 1),  # the first disagreement ends the run
        ([4, 5, 6, 7], [9, 5, 6], 0),
        ([4], [], 0),  # no drafts: plain decoding
        ([4, 5], [4, 5, 6], 2),  # never past greedy's choices
    ],
)
def test_accept_is_the_longest_agreeing_prefix(greedy_ids, drafts, kept):
    assert accept(greedy_ids, drafts) == kept


def test_decode_stats_add_and_dict(model64):
    gen = greedy(model64, _prompt(5), stop=frozenset(), max_tokens=9)
    stats = DecodeStats(reused=1)
    stats.add(gen)
    row = Row(0, [1], stop=frozenset(), cap=4, keep_latents=False)
    row.stats.tokens, row.stats.forwards = 4, 3
    stats.add(row)
    stats.add(DecodeStats(drafted=5, accepted=2, reused=1))
    assert stats.to_dict() == {"tokens": 13, "forwards": 11, "drafted": 5, "accepted": 2, "reused": 2}


def test_row_checks_and_empty_latents():
    with pytest.raises(ValueError, match="feed is empty"):
        Row(0, [], stop=frozenset(), cap=3, keep_latents=True)
    with pytest.raises(ValueError, match="cap=0: expected an integer >= 1"):
        Row(0, [1], stop=frozenset(), cap=0, keep_latents=True)
    row = Row(3, (1, 2), stop={5}, cap=3, keep_latents=True)
    assert row.stop == frozenset({5}) and row.feed == [1, 2] and row.stopped_by is None
    assert row.latent_tensor(8, "cpu").shape == (0, 8)


def _rows(model, decoder, specs, on_token):
    """Rows of ``specs`` (prompt, stop, cap, draft documents or None) on ``decoder``."""
    rows = []
    for i, (prompt, stop, cap, docs) in enumerate(specs):
        drafts = None if docs is None else DraftPool(docs).row(prompt, k=6)
        rows.append(
            Row(
                decoder.add_row(),
                prompt,
                stop=stop,
                cap=cap,
                keep_latents=True,
                drafts=drafts,
                on_token=lambda t, i=i: on_token.append((i, t)),
                tag=i,
            )
        )
    return rows


@pytest.mark.parametrize("policy", ["full", "cost"])
def test_advance_over_many_rows_equals_each_row_alone(model64, policy):
    """Ragged prompts; rows that draft from their true text, from a corrupted copy, or not at all;
    one ends at a stop token, the others at different caps: every row's tokens, stop and latents
    are those of plain one-token greedy decoding of it alone, on a fresh single-row cache."""
    prompts = [_prompt(n, seed) for seed, n in enumerate((5, 1, 13, 7))]
    truth = [greedy(model64, p, stop=frozenset(), max_tokens=24).ids for p in prompts]
    corrupt = [(t + 1) % V if i % 3 == 2 else t for i, t in enumerate(truth[2])]
    s = next(i for i in range(6, 24) if truth[0][i] not in truth[0][:i])  # a token new at i
    stop = frozenset({truth[0][s]})
    specs = [
        (prompts[0], stop, 24, [prompts[0] + truth[0]]),  # stops inside an accepted draft
        (prompts[1], frozenset(), 24, []),  # drafts from its own loop
        (prompts[2], frozenset(), 17, [prompts[2] + corrupt]),
        (prompts[3], frozenset(), 11, None),
    ]
    dec = HFDecoder(model64, initial_capacity=8, costs=GPU_FORWARD_COST)
    tokens = []
    rows = _rows(model64, dec, specs, tokens)
    finished = []
    while not all(r.done for r in rows):
        # "cost" at a GPU's fixed cost: drafts are fed, cut to one width per step
        finished += advance(dec, model64.lm_head, rows, policy=policy)
    assert sorted(r.tag for r in finished) == [0, 1, 2, 3]  # each once
    for r, (prompt, row_stop, cap, _) in zip(rows, specs):
        alone = greedy(model64, prompt, stop=row_stop, max_tokens=cap)  # no drafts
        assert r.ids == alone.ids and r.stopped_by == alone.stopped_by and r.feed == []
        torch.testing.assert_close(r.latent_tensor(32, "cpu"), alone.latents, rtol=0, atol=1e-10)
        # each decision's top-2 gap: the sorted fp64 logits of the latent that made it, alone
        ranked = torch.sort(model64.lm_head(alone.latents).detach(), dim=-1, descending=True).values
        assert len(r.gaps) == len(r.ids) and alone.gaps == pytest.approx(r.gaps, abs=1e-9)
        assert r.gaps == pytest.approx((ranked[:, 0] - ranked[:, 1]).tolist(), abs=1e-9)
        assert [t for i, t in tokens if i == r.tag] == r.ids
        # each forward after the first: its accepted drafts + greedy's own (a stop may cut a run)
        assert r.stats.tokens == len(r.ids) <= 1 + r.stats.forwards + r.stats.accepted
        assert r.stopped_by == "stop" or len(r.ids) == 1 + r.stats.forwards + r.stats.accepted
        assert dec.length(r.slot) == len(prompt) + len(r.ids) - 1  # all but the last token cached
        assert r.secs > 0
    assert rows[0].stopped_by == "stop" and len(rows[0].ids) == s + 1
    assert rows[1].stats.accepted > 0 and rows[2].stats.drafted > rows[2].stats.accepted > 0
    assert rows[3].stats.drafted == 0
    if policy == "full":
        assert rows[0].stats.accepted >= s  # the stop token came out of an accepted draft


def test_top2_gaps_ties_softcap_and_one_token_vocabularies():
    """An exact tie (small integers) has gap 0; the softcap's gap is that of the capped logits; a
    one-token vocabulary has no runner-up (inf)."""
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0], [5.0, 1.0, 2.0, -1.0]])
    assert top2_gaps(logits).tolist() == [0.0, 3.0]
    capped = 4 * torch.tanh(logits / 4)
    want = [0.0, (capped[1, 0] - capped[1, 2]).item()]
    assert top2_gaps(logits, softcap=4.0).tolist() == pytest.approx(want, abs=1e-6)
    assert top2_gaps(torch.ones(3, 1)).tolist() == [float("inf")] * 3


@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_drafted_and_plain_paths_give_the_same_tokens_on_either_decoder(model64, arch):
    """One row: no drafts (m = 0 every step) and drafts give the same tokens, on the single-row
    cache and on the slot store (the store only where it can serve the model)."""
    model = (
        model64 if arch == "llama" else make_tiny_model(arch, vocab_size=V, hidden=32, dtype=torch.float64)
    )
    prompt = _prompt(6)
    plain = greedy(model, prompt, stop=frozenset(), max_tokens=30)
    own = greedy(model, prompt, stop=frozenset(), max_tokens=30, drafts=DraftPool([]).row(prompt, k=8))
    assert own.ids == plain.ids and own.accepted > 0 and own.forwards < plain.forwards
    torch.testing.assert_close(own.latents, plain.latents, rtol=0, atol=1e-10)
    if arch == "llama":
        slots = greedy(model, prompt, stop=frozenset(), max_tokens=30, decoder=HFDecoder(model))
        assert slots.ids == plain.ids and slots.forwards == plain.forwards
        torch.testing.assert_close(slots.latents, plain.latents, rtol=0, atol=1e-10)


def test_fork_waits_for_its_source_and_after_fork_is_called(model64):
    """A row forked from another's first 9 positions feeds only the rest of its prompt, after the
    source's first feed, and decodes as if it had been fed the whole prompt."""
    shared, tail = _prompt(9), [7, 8, 9]
    dec = HFDecoder(model64)
    src = Row(dec.add_row(), shared + [5], stop=frozenset(), cap=6, keep_latents=False)
    forked = Row(dec.add_row(), tail, stop=frozenset(), cap=6, keep_latents=False)
    forked.fork = (src, len(shared))
    fed, forks = [], []
    step = dec.step
    dec.step = lambda feeds: fed.append({r: len(t) for r, t in feeds.items()}) or step(feeds)
    run(dec, model64.lm_head, [src, forked], after_fork=forks.append)
    assert forks == [forked] and forked.fork is None
    assert fed[0] == {src.slot: 10} and fed[1] == {src.slot: 1, forked.slot: 3}
    assert forked.ids == greedy(model64, shared + tail, stop=frozenset(), max_tokens=6).ids
    assert src.ids == greedy(model64, shared + [5], stop=frozenset(), max_tokens=6).ids


def test_max_drafts_bounds_every_feed(model64):
    prompt = _prompt(5)
    truth = greedy(model64, prompt, stop=frozenset(), max_tokens=30).ids
    dec = CacheDecoder(model64)
    widths = []
    step = dec.step
    dec.step = lambda feeds: widths.append(len(feeds[0])) or step(feeds)
    row = Row(dec.add_row(), prompt, stop=frozenset(), cap=30, keep_latents=False)
    row.drafts = DraftPool([prompt + truth]).row(prompt, k=8)
    run(dec, model64.lm_head, [row], max_drafts=2)
    assert row.ids == truth and max(widths[1:]) == 3 and row.stats.accepted > 0


def test_advance_needs_a_row_to_feed_and_a_known_policy(model64):
    dec = CacheDecoder(model64)
    row = Row(dec.add_row(), [5, 6], stop=frozenset(), cap=1, keep_latents=False)
    with pytest.raises(ValueError, match="draft_policy='fast'"):
        advance(dec, model64.lm_head, [row], policy="fast")
    assert advance(dec, model64.lm_head, [row]) == [row] and row.stopped_by == "length"
    with pytest.raises(ValueError, match="no row to feed"):
        advance(dec, model64.lm_head, [row])
