"""The verifiers' batch: prompt rows that fork their shared prefix, and ``greedy_generate_batch``
against each prompt alone and a full recompute."""

import contextlib

import pytest
import torch
from conftest import DecisionGaps, assert_same_or_near_tie, make_tiny_model

from latentseek_fast.decoding import batch, slots
from latentseek_fast.decoding.batch import MIN_SHARED_PREFIX, greedy_generate_batch, prompt_rows
from latentseek_fast.decoding.decoder import CacheDecoder
from latentseek_fast.decoding.greedy import greedy
from latentseek_fast.decoding.model import cache_keyword, forward_params
from latentseek_fast.decoding.rows import run
from latentseek_fast.decoding.slots import HFDecoder
from latentseek_fast.decoding.stops import reply_stop_ids


class CharTokenizer:
    """A character-level tokenizer for a vocabulary of 128 (ids 3..127), eos = pad = 2."""

    eos_token_id = pad_token_id = 2

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [3 + ord(c) % 125 for c in text]}

    def get_vocab(self):
        return {"<eos>": 2}


PROMPTS = ["Hello there, how are", "A", "The quick brown fox jumps over the lazy dog", "1 2 3", "xyz?"]
# Verifier-like prompts: a long shared prefix (the quoted solution), different instructions.
SHARED = "Question: what is 12 times 12? Solution: 12 * 12 = 144, so 144. "
ASKS = ["Check each calculation.", "Is the answer right?", "Is it complete?", "Understood?"]


@pytest.fixture(scope="module")
def small():
    return make_tiny_model(vocab_size=128, seed=3), CharTokenizer()


def _full_recompute(model, tok, prompt, n, stops):
    ids = torch.tensor([tok(prompt)["input_ids"]])
    out = []
    with torch.no_grad():
        for _ in range(n):
            t = int(model(ids).logits[0, -1].argmax())
            out.append(t)
            if t in stops:
                break
            ids = torch.cat([ids, torch.tensor([[t]])], dim=1)
    return out


def test_batched_matches_sequential_and_full_recompute(small):
    model, tok = small
    stops = reply_stop_ids(tok, model)
    with DecisionGaps(model) as gaps:
        batched = greedy_generate_batch(model, tok, PROMPTS, 12)
    gaps.assert_clear()  # so batch, single and full recompute must pick the same tokens
    sequential = [greedy_generate_batch(model, tok, [p], 12)[0] for p in PROMPTS]
    assert batched == sequential
    assert batched == [_full_recompute(model, tok, p, 12, stops) for p in PROMPTS]


def test_finished_rows_leave_the_batch(small, monkeypatch):
    """A finished row is never fed again and its slot is freed: the forward shrinks as the last
    slots finish (a finished row in the middle is masked, not computed apart)."""
    model, tok = small
    monkeypatch.setattr(batch, "reply_stop_ids", lambda tokenizer, model=None: frozenset())
    free = greedy_generate_batch(model, tok, PROMPTS, 16)
    # stop tokens that end rows at different steps, the last row first
    stop = frozenset({free[0][2], free[3][6], free[4][1]})
    monkeypatch.setattr(batch, "reply_stop_ids", lambda tokenizer, model=None: stop)
    batch_sizes, fed = [], {}
    handle = model.model.register_forward_pre_hook(
        lambda mod, args, kwargs: batch_sizes.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    step = slots.HFDecoder.step

    def spy(self, feeds):
        for r, toks in feeds.items():
            fed[r] = fed.get(r, 0) + len(toks)
        return step(self, feeds)

    monkeypatch.setattr(slots.HFDecoder, "step", spy)
    try:
        with DecisionGaps(model) as gaps:
            batched = greedy_generate_batch(model, tok, PROMPTS, 16)
    finally:
        handle.remove()
    gaps.assert_clear()
    monkeypatch.undo()
    monkeypatch.setattr(batch, "reply_stop_ids", lambda tokenizer, model=None: stop)
    sequential = [greedy_generate_batch(model, tok, [p], 16)[0] for p in PROMPTS]
    assert batched == sequential
    lengths = [len(r) for r in batched]
    assert len(set(lengths)) > 1 and min(lengths) < 16  # rows did stop at different points
    for row in batched:
        assert (row[-1] in stop) or len(row) == 16
        assert not any(t in stop for t in row[:-1])
    # each row was fed its prompt and every token but its last, nothing after it finished
    assert fed == {i: len(tok(p)["input_ids"]) + len(r) - 1 for i, (p, r) in enumerate(zip(PROMPTS, batched))}
    assert batch_sizes[0] == len(PROMPTS) and batch_sizes == sorted(batch_sizes, reverse=True)
    assert batch_sizes[-1] < len(PROMPTS)


class _PastKeyValuesBackbone(torch.nn.Module):
    """A backbone whose forward only knows the pre-5.2x ``past_key_values=`` keyword."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None
    ):
        return self.inner(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
        )


class PastKeyValuesModel(torch.nn.Module):
    """A causal LM (LM head, config) over ``_PastKeyValuesBackbone``."""

    def __init__(self, inner):
        super().__init__()
        self.model = _PastKeyValuesBackbone(inner.model)
        self.lm_head = inner.lm_head
        self.config = inner.config
        self.generation_config = inner.generation_config

    def get_output_embeddings(self):
        return self.lm_head


def test_both_cache_keywords(small):
    model, tok = small
    old = PastKeyValuesModel(model)
    assert cache_keyword(model.model) == "cache" and cache_keyword(old.model) == "past_key_values"
    new_keyword = "cache" in forward_params(type(model.model))
    with pytest.warns(FutureWarning) if new_keyword else contextlib.nullcontext():
        via_old = greedy_generate_batch(old, tok, PROMPTS[:3], 6)  # the slot store
        via_old_cache = greedy(old, tok(PROMPTS[0])["input_ids"], stop=frozenset(), max_tokens=6)
    assert via_old == greedy_generate_batch(model, tok, PROMPTS[:3], 6)
    assert (
        via_old_cache.ids == greedy(model, tok(PROMPTS[0])["input_ids"], stop=frozenset(), max_tokens=6).ids
    )


def test_generation_argument_checks(small):
    model, tok = small
    assert greedy_generate_batch(model, tok, [], 5) == []
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy_generate_batch(model, tok, ["a"], 0)
    with pytest.raises(TypeError, match="list"):
        greedy_generate_batch(model, tok, "a", 3)
    with pytest.raises(ValueError, match=r"prompts\[1\]"):
        greedy_generate_batch(model, tok, ["a", ""], 3)
    assert [len(r) for r in greedy_generate_batch(model, tok, ["ab"], 1)] == [1]


def test_prompt_rows_fork_the_shared_prefix(small):
    model, tok = small
    prompts = [tok(SHARED + a)["input_ids"] for a in ASKS] + [tok(SHARED)["input_ids"]]
    shared = len(tok(SHARED)["input_ids"])
    assert shared >= MIN_SHARED_PREFIX
    dec = HFDecoder(model)
    rows = prompt_rows(dec, prompts, stop=frozenset(), cap=5, drafts_k=4, policy="cost")
    assert rows[0].fork is None and rows[0].feed == prompts[0]
    for r, ids in zip(rows[1:4], prompts[1:4]):
        assert r.fork == (rows[0], shared) and r.feed == ids[shared:]
    assert rows[4].fork == (rows[0], shared - 1) and rows[4].feed == prompts[4][-1:]  # its last token
    for r, ids in zip(rows, prompts):  # each drafts from its own prompt
        assert r.drafts.k == 4 and r.drafts.policy == "cost" and r.drafts.tokens == ids
        assert not r.keep_latents and r.cap == 5
    assert {r.slot for r in rows} == set(range(5))
    plain = prompt_rows(CacheDecoder(model), prompts[:1], stop=frozenset(), cap=5, drafts_k=0, policy="full")
    assert plain[0].drafts is None
    few = prompt_rows(
        dec, prompts[:2], stop=frozenset(), cap=5, drafts_k=0, policy="full", min_shared_prefix=99
    )
    assert [r.fork for r in few] == [None, None]
    with pytest.raises(ValueError, match=r"prompts_ids\[1\] is empty"):
        prompt_rows(dec, [[5], []], stop=frozenset(), cap=5, drafts_k=0, policy="full")
    with pytest.raises(ValueError, match="drafts_k=-1"):
        prompt_rows(dec, [[5]], stop=frozenset(), cap=5, drafts_k=-1, policy="full")


@pytest.mark.parametrize("drafts_k", [0, 6])
def test_forked_rows_decode_as_each_prompt_alone(drafts_k):
    """Verifier-like prompts on an fp64 model: forked and drafted rows give the tokens of each
    prompt decoded alone; three of four rows forked the prefix."""
    model = make_tiny_model(vocab_size=128, seed=3, dtype=torch.float64, tie=False)
    tok = CharTokenizer()
    prompts = [tok(SHARED + a)["input_ids"] for a in ASKS]
    dec = HFDecoder(model)
    rows = prompt_rows(dec, prompts, stop=frozenset({2}), cap=20, drafts_k=drafts_k, policy="full")
    forks = []
    run(dec, model.lm_head, rows, after_fork=forks.append)
    assert forks == rows[1:]
    for r, ids in zip(rows, prompts):
        assert r.ids == greedy(model, ids, stop=frozenset({2}), max_tokens=20).ids
    assert (sum(r.stats.drafted for r in rows) > 0) == (drafts_k > 0)


def test_shared_prefix_is_prefilled_once(small, monkeypatch):
    model, tok = small
    prompts = [SHARED + a for a in ASKS]
    forks = []
    fork = slots.HFDecoder.fork
    monkeypatch.setattr(slots.HFDecoder, "fork", lambda self, *a: forks.append(a[2]) or fork(self, *a))
    batched = greedy_generate_batch(model, tok, prompts, 8)
    assert forks == [len(tok(SHARED)["input_ids"])] * 3
    assert batched == [greedy_generate_batch(model, tok, [p], 8)[0] for p in prompts]


def test_models_the_slot_store_cannot_serve_run_one_prompt_at_a_time():
    model = make_tiny_model("mistral", vocab_size=128, sliding_window=4, seed=3)
    tok = CharTokenizer()
    assert slots.slot_support(model) is not None
    got = greedy_generate_batch(model, tok, PROMPTS, 10)
    stop = reply_stop_ids(tok, model)
    assert got == [greedy(model, tok(p)["input_ids"], stop=stop, max_tokens=10).ids for p in PROMPTS]
    assert got == [_full_recompute(model, tok, p, 10, stop) for p in PROMPTS]


@pytest.mark.slow
def test_real_model_batched_matches_sequential(smol):
    from latentseek_fast.prompts import build_prompt

    model, tok = smol
    prompts = [
        build_prompt(tok, q)
        for q in (
            "Add 7 and 8.",
            "Tom has 3 apples and buys 4 more apples. How many apples does he have now?",
        )
    ]
    batched = greedy_generate_batch(model, tok, prompts, 4)
    for p, row in zip(prompts, batched):
        single = greedy_generate_batch(model, tok, [p], 4)[0]
        assert_same_or_near_tie(model, tok(p).input_ids, single, row, what="batched row")
    assert tok.convert_tokens_to_ids("<|im_end|>") in reply_stop_ids(tok, model)
