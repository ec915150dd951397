"""Draft-verified greedy decoding and exact reuse against plain greedy decoding and brute force.

The decoder tests run tiny random fp64 models (ties and blocking noise are out of reach there), so
the drafted tokens must equal plain greedy's exactly and the latents to fp64 round-off.
"""

import json

import pytest
import torch
from conftest import AdamGradients, LatentDecisions, assert_same_or_near_tie, make_tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st

from latentseek_fast import SeekConfig, decode, seek
from latentseek_fast import loop as loop_mod
from latentseek_fast.drafts import BACKOFF_MAX, DecodeStats, DraftPool, DraftRow, greedy_continue_drafted

V = 64  # small vocabulary: the random model's greedy text repeats in part, so drafts hit and miss
PROMPT_LENGTHS = (1, 5, 13)  # ragged prompts


@pytest.fixture(scope="module")
def model64():
    return make_tiny_model(vocab_size=V, hidden=32, dtype=torch.float64, seed=0, tie=False)


def _prompt(n: int) -> list[int]:
    g = torch.Generator().manual_seed(n)
    return torch.randint(3, V, (n,), generator=g).tolist()


def _decode(model, prompt, *, stop=frozenset(), max_tokens=40, row=None):
    """(Generation, cache) of greedy decoding after ``prompt``, drafted when ``row`` is given."""
    cache = decode.new_cache(model)
    h = decode.prefill(model, torch.tensor([prompt]), cache)
    gen = decode.greedy_continue(model, cache, h, stop=stop, max_tokens=max_tokens, drafts=row)
    return gen, cache


def _assert_same(model, plain, drafted):
    (pg, pc), (dg, dc) = plain, drafted
    assert dg.ids == pg.ids and dg.stopped_by == pg.stopped_by
    torch.testing.assert_close(dg.latents, pg.latents, rtol=0, atol=1e-10)
    assert decode.cache_length(dc) == decode.cache_length(pc)
    # The caches hold the same positions: one more step from each gives the same state.
    probe = torch.tensor([[7]])
    torch.testing.assert_close(
        decode.hidden_states(model, probe, dc), decode.hidden_states(model, probe, pc), rtol=0, atol=1e-10
    )


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
    assert decode.cache_length(drafted[1]) == n + s  # every position before the stop token
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


# --- seek: drafts on and off, exact reuse ------------------------------------------------------

PROMPT = "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tiny64(tokenizer):
    """An untied random fp64 model that ends its answer to PROMPT with a stop token (11 tokens).

    Its LM-head row of ``<|im_end|>`` is made 1% longer than that of the 11th greedy token, so
    greedy decoding picks the stop token wherever it would pick that one.
    """
    model = make_tiny_model(dtype=torch.float64, seed=3, tie=False)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    cache = decode.new_cache(model)
    truth = decode.greedy_continue(
        model, cache, decode.prefill(model, ids, cache), stop=frozenset(), max_tokens=11
    ).ids
    with torch.no_grad():
        model.lm_head.weight[2] = 1.01 * model.lm_head.weight[truth[10]]
    return model, tokenizer


def _seek(tiny, reward, **kw):
    model, tok = tiny
    kw = {"max_new_tokens": 24, "rho": 0.3, "lr": 0.5, "backend": "reference", "max_steps": 4, **kw}
    return seek(model, tok, "What is 2+3?", reward, prompt=PROMPT, **kw)


def _comparable(res):
    d = res.to_dict()
    for key in ("timings", "decode_stats", "reused"):
        d.pop(key)
    return d


class TextReward:
    """A deterministic reward (a function of the answer's text) that counts its calls."""

    deterministic = True

    def __init__(self):
        self.calls = 0

    def __call__(self, question, answer):
        self.calls += 1
        return -1.0 - (sum(map(ord, answer)) % 5) / 10


@pytest.mark.parametrize("tied", [False, True])
def test_seek_with_drafts_equals_seek_without(tiny64, tokenizer, tied):
    # The tied random model repeats its input token: everything it writes can be drafted.
    tiny = (make_tiny_model(dtype=torch.float64, seed=3), tokenizer) if tied else tiny64
    on = _seek(tiny, TextReward(), draft_tokens=8, max_steps=3)
    off = _seek(tiny, TextReward(), draft_tokens=0, max_steps=3)
    assert _comparable(on) == _comparable(off)
    assert on.decode_stats["tokens"] == off.decode_stats["tokens"] and off.decode_stats["drafted"] == 0
    if tied:
        assert on.decode_stats["accepted"] > 0
        assert on.decode_stats["forwards"] < off.decode_stats["forwards"]


class _Recorder:
    """Wraps ``loop.make_stepper`` to record each iteration's re-decoded tokens."""

    def __init__(self, monkeypatch):
        self.tokens = []
        real = loop_mod.make_stepper

        def make(*a, **kw):
            stepper = real(*a, **kw)
            step = stepper.step

            def recording(*sa, **skw):
                out = step(*sa, **skw)
                self.tokens.append(tuple(out))
                return out

            stepper.step = recording
            return stepper

        monkeypatch.setattr(loop_mod, "make_stepper", make)


@pytest.mark.parametrize(
    "lr,max_new_tokens,drafts",
    [
        (1e-4, 24, 0),  # every iteration re-decodes the original tokens (ended by a stop token)
        (3e-3, 24, 8),  # some iterations do
        (1e-4, 8, 8),  # the original hit max_new_tokens: only later iterations can be reused
    ],
)
def test_exact_reuse_gives_the_same_result(tiny64, monkeypatch, lr, max_new_tokens, drafts):
    rec = _Recorder(monkeypatch)
    kw = {"lr": lr, "draft_tokens": drafts, "max_steps": 5, "max_new_tokens": max_new_tokens}
    off_reward = TextReward()
    off = _seek(tiny64, off_reward, reuse=False, **kw)
    seen_off = list(rec.tokens)
    rec.tokens.clear()
    on_reward = TextReward()
    on = _seek(tiny64, on_reward, reuse=True, **kw)
    assert _comparable(on) == _comparable(off) and rec.tokens == seen_off
    # The oracle count: an iteration repeats earlier re-decoded tokens, or the original answer's
    # own (which a continuation reproduces when the original ended with a stop token).
    L = on.update_length
    stopped = on.original_ids[-1] in decode.stop_ids(tiny64[1])
    assert stopped == (max_new_tokens == 24)
    earlier = {tuple(on.original_ids[:L])} if stopped else set()
    expected = 0
    for toks in seen_off:
        expected += toks in earlier
        earlier.add(toks)
    assert on.reused == expected > 0 and off.reused == 0
    assert on_reward.calls == off_reward.calls - expected  # the deterministic reward was reused
    if lr == 1e-4:
        assert expected == on.iterations - (0 if stopped else 1)


def test_reuse_rescores_a_reward_that_is_not_deterministic(tiny64):
    calls = []

    def reward(question, answer):
        calls.append(answer)
        return -1.0

    res = _seek(tiny64, reward, lr=1e-4, max_steps=4)
    assert res.reused >= 3 and len(calls) == 1 + res.iterations


@pytest.mark.parametrize("field,value", [("draft_tokens", -1), ("draft_tokens", 1.5), ("reuse", "yes")])
def test_config_checks_new_fields(field, value):
    with pytest.raises(ValueError, match=f"{field}={value!r}"):
        SeekConfig(**{field: value})


def test_decode_stats_of_plain_generation(model64):
    stats = DecodeStats()
    stats.add(_decode(model64, _prompt(5), max_tokens=9)[0])
    assert stats.to_dict() == {"tokens": 9, "forwards": 8, "drafted": 0, "accepted": 0, "reused": 0}


def test_drafted_decoder_validates_max_tokens(model64):
    cache = decode.new_cache(model64)
    h = decode.prefill(model64, torch.tensor([[4, 5]]), cache)
    with pytest.raises(ValueError, match="max_tokens=0"):
        greedy_continue_drafted(model64, cache, h, stop=frozenset(), max_tokens=0, row=DraftRow(None, [4, 5]))


def test_cli_draft_tokens(tmp_path, tokenizer, capsys):
    from latentseek_fast.app import cli

    make_tiny_model(seed=3).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    base = ["run", "--model", str(tmp_path), "--problem", "What is 1+1?", "--gold", "2", "--json"]
    base += ["--max-new-tokens", "8", "--max-steps", "2", "--rho", "0.5", "--threads", "1"]
    answers = []
    for k in ("0", "8"):
        assert cli.main([*base, "--draft-tokens", k]) == 0
        out = json.loads(capsys.readouterr().out)
        answers.append((out["answer_ids"], out["rewards"]))
        assert out["decode_stats"]["drafted"] == 0 if k == "0" else out["decode_stats"]["drafted"] > 0
    assert answers[0] == answers[1]
    assert cli.main([*base, "--draft-tokens", "-1"]) == 2
    assert "error: --draft-tokens -1: expected an integer >= 0" in capsys.readouterr().err


@pytest.mark.slow
def test_drafts_on_the_embedded_model(smol):
    """Drafts on and off give the same answers, or part at a near-tie (``assert_same_or_near_tie``)."""
    from latentseek_fast.app.demo import demo_problems
    from latentseek_fast.prompts import build_prompt

    model, tok = smol
    problem = demo_problems()[1]  # greedy gets it wrong: iterations run
    # the reference backend's torch.optim.Adam lets AdamGradients see the first step's gradient
    kw = {"max_new_tokens": 64, "max_steps": 2, "rho": 0.2, "lr": 0.03, "backend": "reference"}
    on = seek(model, tok, problem, None, draft_tokens=8, **kw)
    with AdamGradients() as grads, LatentDecisions(model) as latent:
        off = seek(model, tok, problem, None, draft_tokens=0, **kw)
    assert on.decode_stats["accepted"] > 0
    prompt = tok(build_prompt(tok, problem.question, dataset=problem.dataset)).input_ids
    if assert_same_or_near_tie(model, prompt, off.original_ids, on.original_ids, what="original") is not None:
        return
    # drafted decoding's latents differ from plain decoding's by rounding: fragile gradient signs
    reach = grads.flip_reach(model.lm_head.weight, kw["lr"], kw["max_steps"])
    redecoded = (0, latent.gaps(off.update_length), reach)
    if assert_same_or_near_tie(model, prompt, off.answer_ids, on.answer_ids, redecoded=redecoded) is None:
        assert on.rewards == off.rewards and on.answer == off.answer


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
        w: (producing + sum(_expected_accepted(min(m, w - 1), q) for m, q in drafting)) / (fixed + slots * w)
        for w in range(floor, top + 1)
    }
    best = max(rates.values())
    return rates, best


@settings(max_examples=300, deadline=None)
@given(
    drafting=st.lists(st.tuples(st.integers(1, 12), st.floats(0.0, 1.0)), max_size=6),
    extra=st.integers(0, 4),
    idle=st.integers(0, 4),
    fixed=st.floats(0.0, 200.0),
    floor=st.integers(1, 6),
)
def test_best_width_maximises_expected_tokens_per_cost(drafting, extra, idle, fixed, floor):
    from latentseek_fast.drafts import best_width

    producing = len(drafting) + extra
    slots = max(1, producing + idle)
    w = best_width(drafting, producing=producing, slots=slots, fixed=fixed, floor=floor)
    rates, best = _oracle_width(drafting, producing, slots, fixed, floor)
    assert rates[w] >= best * (1 - 1e-9)  # the best width (up to rounding) ...
    assert all(rates[v] <= rates[w] * (1 + 1e-9) for v in rates if v < w)  # ... and no narrower one beats it


def test_best_width_cases():
    from latentseek_fast.drafts import CPU_FORWARD_POSITIONS, GPU_FORWARD_POSITIONS, best_width

    cpu, gpu = CPU_FORWARD_POSITIONS, GPU_FORWARD_POSITIONS
    assert best_width([(8, 1.0)], producing=1, slots=1, fixed=cpu) == 9  # a repetition loop: all
    assert best_width([(8, 0.0)], producing=1, slots=1, fixed=cpu) == 1  # nothing to copy: none
    assert best_width([(8, 0.5)], producing=1, slots=1, fixed=cpu) == 3  # (1 + .5 + .25) / (5 + 3)
    assert best_width([(8, 0.5)] * 16, producing=16, slots=16, fixed=cpu) == 1  # a wide block
    assert best_width([(8, 0.9)] * 16, producing=16, slots=16, fixed=cpu) < 5
    assert best_width([(8, 0.9)] * 16, producing=16, slots=16, fixed=gpu) == 9  # reading weights dominates
    assert best_width([(3, 0.0)], producing=2, slots=2, fixed=cpu, floor=6) == 6  # padding is free
    assert best_width([], producing=3, slots=3, fixed=cpu, floor=4) == 4
    with pytest.raises(ValueError, match="floor=0"):
        best_width([], producing=1, slots=1, fixed=cpu, floor=0)


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
    with pytest.raises(ValueError, match="draft_policy='fast'.*'full', 'cost'"):
        SeekConfig(draft_policy="fast")
    with pytest.raises(ValueError, match="draft_policy='x'"):
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
