"""The batched seek engine against its oracle, ``seek()`` run problem by problem.

Tiny random models in fp64 (decoding in a padded batch then equals decoding alone to ~1e-15,
far below any gap between greedy choices) with ragged prompts; the fused latent step (fp32
only, like the kernels) on fp32 models; one slow test on the embedded model.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
import torch
from conftest import assert_same_or_near_tie, make_tiny_model

import latentseek_fast as lsf
from latentseek_fast import decode
from latentseek_fast.engine import (
    IterationDone,
    OriginalDone,
    OriginalToken,
    ProblemDone,
    ProblemError,
)
from latentseek_fast.engine.decoder import HFDecoder
from latentseek_fast.rewards import SelfReward

QUESTIONS = [
    "What is 2+3?",
    "A train leaves at noon and travels 60 miles per hour for 3 hours. How far does it go?",
    "Add 7 and 8.",
    "If x=4, what is x squared plus one, minus two?",
    "Name a prime.",
    "How many legs do 3 spiders and 2 ants have in total?",
    "Compute 12 * 12.",
]
FIELDS = (
    "answer",
    "answer_ids",
    "original_answer",
    "original_ids",
    "rewards",
    "original_length",
    "update_length",
    "final_length",
    "iterations",
    "stopped",
    "backend",
)


def hashed_reward(question, answer):
    """A deterministic reward of the answer text in {0, -1/3, -2/3, -1}: varied histories and stops."""
    return -(zlib.crc32(answer.encode()) % 4) / 3


def lively_model(arch="llama", dtype=torch.float64, seed=0, eos_boost=2.5):
    """A tiny random model whose greedy text varies (untied, weights x4) and sometimes stops
    early (the eos row of the LM head scaled by ``eos_boost``; 0 never stops), so rows finish
    at different steps."""
    model = make_tiny_model(arch, tie=False, seed=seed, dtype=dtype)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(4.0)
        model.lm_head.weight[2] *= eos_boost
    return model


@pytest.fixture(scope="module")
def llama64():
    return lively_model("llama")


@pytest.fixture(scope="module")
def qwen64():
    return lively_model("qwen2", seed=1)


SETTINGS = {"max_new_tokens": 10, "rho": 0.5, "lr": 0.5, "max_steps": 3}


def oracle(model, tok, problems, reward=hashed_reward, **kw):
    kw = {**SETTINGS, **kw}
    rewards = reward if isinstance(reward, list) else [reward] * len(problems)
    return [lsf.seek(model, tok, q, r, **kw) for q, r in zip(problems, rewards)]


def assert_same(got, want):
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        for f in FIELDS:
            assert getattr(g, f) == getattr(w, f), (
                f"problem {i}: {f} differs: {getattr(g, f)!r} != {getattr(w, f)!r}"
            )
        assert set(g.timings) == set(w.timings) and all(v >= 0 for v in g.timings.values())


# -- the decoder ---------------------------------------------------------------------------------


@pytest.mark.parametrize("split", [False, True], ids=["one-forward", "long-feeds-apart"])
def test_decoder_step_equals_per_row_decoding(llama64, split):
    """Ragged feeds, several tokens per row per step, rollback of one row, drop and slot reuse:
    every latent equals the one of the same tokens run alone through a fresh cache. ``split``:
    feeds of more than 2 tokens run as a second forward over their own (gathered) slots."""
    model = llama64
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, 49152, (n,), generator=g).tolist() for n in (5, 9, 3)]

    def alone(seq):
        with torch.no_grad():
            return decode.hidden_states(model, torch.tensor([seq]), decode.new_cache(model))[0]

    def close(a, b):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)

    # A small store, so that it grows while rows live.
    dec = HFDecoder(model, initial_capacity=4, long_feed=2, split_gain=0.0 if split else 1e9)
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

    assert dec.forwards == (8 if split else 5)
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


# -- seek_many == seek ---------------------------------------------------------------------------


_ORACLE: dict = {}


@pytest.mark.parametrize("batch_size", [1, 3, 8])
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_seek_many_equals_seek_reference_fp64(llama64, qwen64, tokenizer, arch, batch_size):
    model = llama64 if arch == "llama" else qwen64
    problems = QUESTIONS[:6]
    if arch not in _ORACLE:  # seek() per problem, once per model
        _ORACLE[arch] = oracle(model, tokenizer, problems, backend="reference")
    want = _ORACLE[arch]
    got = lsf.seek_many(
        model, tokenizer, problems, hashed_reward, batch_size=batch_size, backend="reference", **SETTINGS
    )
    assert_same(got, want)
    assert {r.stopped for r in want} >= {"threshold", "max_steps"}  # the test covers both exits


@pytest.fixture(scope="module")
def llama32():
    return lively_model("llama", dtype=torch.float32, seed=2)


@pytest.mark.parametrize(
    "extra",
    [{}, {"start_index": 1, "grad_clip": 0.5}],
    ids=["plain", "start-index-and-clip"],
)
def test_seek_many_equals_seek_fused_fp32(llama32, tokenizer, extra):
    """The torch backend: one latent_policy_grad call per round over every due problem's rows
    and latent_adam_ grouped by Adam step (batch 3 of 7 problems: problems at different steps
    are due together)."""
    problems = QUESTIONS
    want = oracle(llama32, tokenizer, problems, backend="torch", **extra)
    got = lsf.seek_many(
        llama32, tokenizer, problems, hashed_reward, batch_size=3, backend="torch", **SETTINGS, **extra
    )
    assert_same(got, want)
    assert sum(r.iterations for r in want) >= 5


def test_batched_latent_step_groups_by_adam_step(tokenizer, monkeypatch):
    """Problems at different Adam steps are due in one round: one policy-grad call per round
    (plus one for the first direction of problems that just joined), one Adam call per distinct
    step count, never one per problem."""
    from latentseek_fast.engine import latent

    calls = {"lpg": [], "adam": []}
    real_lpg, real_adam = latent.latent_policy_grad, latent.latent_adam_

    def lpg(hidden, *a, **k):
        calls["lpg"].append(hidden.shape[0])
        return real_lpg(hidden, *a, **k)

    def adam(latents, direction, reward, *a, **k):
        calls["adam"].append((latents.shape[0], a[2]))  # rows, step
        return real_adam(latents, direction, reward, *a, **k)

    monkeypatch.setattr(latent, "latent_policy_grad", lpg)
    monkeypatch.setattr(latent, "latent_adam_", adam)
    model = lively_model("llama", dtype=torch.float32, eos_boost=0.0)  # every answer runs 10 tokens
    # Problem 0 clears the threshold at once; problem 4 takes its slot and its original answer
    # ends as the continuations of problems 1-3 do: then 1-3 are due for step 2, 4 for step 1.
    rewards = [lambda q, a: 0.0] + [lambda q, a: -1.0] * 4
    res = lsf.seek_many(model, tokenizer, QUESTIONS[:5], rewards, batch_size=4, backend="torch", **SETTINGS)
    L = 5
    assert [r.iterations for r in res] == [0, 3, 3, 3, 3] and {r.update_length for r in res} == {L}
    assert calls["lpg"] == [3 * L, 3 * L, L, 4 * L, 4 * L, L]
    assert calls["adam"] == [(3 * L, 1), (3 * L, 2), (L, 1), (3 * L, 3), (L, 2), (L, 3)]


def test_self_reward_verifiers_batched_as_rows(llama64, tokenizer):
    """SelfReward's four verifier prompts of every due problem decode as engine rows; the
    rewards equal those of SelfReward's own batched generation inside seek()."""
    sr = SelfReward(llama64, tokenizer, max_new_tokens=6)
    problems = QUESTIONS[:3]
    want = oracle(llama64, tokenizer, problems, reward=sr, backend="reference", max_steps=2)
    got = lsf.seek_many(
        llama64, tokenizer, problems, sr, batch_size=3, backend="reference", **{**SETTINGS, "max_steps": 2}
    )
    assert_same(got, want)
    assert all(r.timings["reward"] > 0 for r in got)


# -- rewards, order, errors, events --------------------------------------------------------------


class Raises:
    def __init__(self, after):
        self.after, self.calls = after, 0

    def __call__(self, question, answer):
        self.calls += 1
        if self.calls > self.after:
            raise RuntimeError("judge crashed")
        return -1.0


def test_raising_reward_names_the_problem(llama64, tokenizer):
    rewards = [hashed_reward, hashed_reward, Raises(after=1), hashed_reward]
    seen, finished = [], []
    on_event = lambda e: finished.append(e.index) if isinstance(e, ProblemDone) else None  # noqa: E731
    with pytest.raises(ProblemError, match=r"problem 2: RuntimeError: judge crashed") as info:
        for index, _ in lsf.iter_seek(
            llama64,
            tokenizer,
            QUESTIONS[:4],
            rewards,
            batch_size=2,
            backend="reference",
            on_event=on_event,
            **SETTINGS,
        ):
            seen.append(index)
    assert info.value.index == 2 and isinstance(info.value.__cause__, RuntimeError)
    # Every problem that finished before the failure was yielded first.
    assert seen and seen == finished and 2 not in seen
    with pytest.raises(ValueError, match="one per problem"):
        lsf.seek_many(llama64, tokenizer, QUESTIONS[:3], [hashed_reward] * 2)


def test_input_order_and_each_index_once(llama64, tokenizer):
    """Problems finish out of order (ragged answers and histories); seek_many returns them in
    input order and iter_seek yields every index exactly once."""
    problems = QUESTIONS
    order = [
        i
        for i, _ in lsf.iter_seek(
            llama64, tokenizer, problems, hashed_reward, batch_size=3, backend="reference", **SETTINGS
        )
    ]
    assert sorted(order) == list(range(len(problems))) and order != sorted(order)
    got = lsf.seek_many(
        llama64, tokenizer, problems, hashed_reward, batch_size=3, backend="reference", **SETTINGS
    )
    assert [r.original_answer for r in got] == [
        r.original_answer for r in oracle(llama64, tokenizer, problems, backend="reference")
    ]


def test_default_reward_is_each_problems_psrm(llama64, tokenizer):
    from latentseek_fast.data import Problem

    pairs = (("Add 7 and 8.", "15"), ("Name a prime.", "7"))
    problems = [Problem(id=str(i), question=q, gold=g, dataset="gsm8k") for i, (q, g) in enumerate(pairs)]
    got = lsf.seek_many(llama64, tokenizer, problems, batch_size=2, backend="reference", **SETTINGS)
    want = [lsf.seek(llama64, tokenizer, p, backend="reference", **SETTINGS) for p in problems]
    assert_same(got, want)


def test_events_stream_each_problem_in_order(llama64, tokenizer):
    events = []
    res = lsf.seek_many(
        llama64,
        tokenizer,
        QUESTIONS[:3],
        hashed_reward,
        batch_size=2,
        backend="reference",
        on_event=events.append,
        **SETTINGS,
    )
    for i, r in enumerate(res):
        mine = [e for e in events if e.index == i]
        toks = [e for e in mine if isinstance(e, OriginalToken)]
        assert [e.token_id for e in toks] == r.original_ids
        kinds = [type(e) for e in mine if not isinstance(e, OriginalToken)]
        assert kinds == [OriginalDone] + [IterationDone] * r.iterations + [ProblemDone]
        done = next(e for e in mine if isinstance(e, OriginalDone))
        assert done.reward == r.rewards[0] and done.length == r.original_length and done.tokens_per_s > 0
        iters = [e for e in mine if isinstance(e, IterationDone)]
        assert [e.reward for e in iters] == r.rewards[1:] and [e.iteration for e in iters] == list(
            range(1, r.iterations + 1)
        )
        assert mine[-1].result is r
    # seek() streams the same events for one problem (index 0).
    single = []
    one = lsf.seek(
        llama64,
        tokenizer,
        QUESTIONS[0],
        hashed_reward,
        backend="reference",
        on_event=single.append,
        **SETTINGS,
    )
    assert [e.token_id for e in single if isinstance(e, OriginalToken)] == one.original_ids
    assert [type(e) for e in single if not isinstance(e, OriginalToken)] == [OriginalDone] + [
        IterationDone
    ] * one.iterations + [ProblemDone]
    assert [e.reward for e in single if isinstance(e, IterationDone)] == one.rewards[1:]


@pytest.mark.parametrize(
    "kw,match",
    [({"batch_size": 0}, "batch_size=0"), ({"on_event": 3}, "on_event=3"), ({"rho": 2.0}, "rho=2.0")],
)
def test_bad_arguments_are_named(llama64, tokenizer, kw, match):
    with pytest.raises(ValueError, match=match):
        lsf.iter_seek(llama64, tokenizer, QUESTIONS[:2], hashed_reward, **kw)
    with pytest.raises(ValueError, match="problems="):
        lsf.seek_many(llama64, tokenizer, "What is 2+3?", hashed_reward)
    with pytest.raises(ValueError, match=r"problems\[1\]: problem=''"):
        lsf.seek_many(llama64, tokenizer, ["What is 2+3?", ""], hashed_reward)


# -- the embedded model --------------------------------------------------------------------------


def _gsm8k_path() -> Path | None:
    here = Path(__file__).resolve()
    for parent in here.parents:
        p = parent / "shared" / "data" / "gsm8k_test.jsonl"
        if p.exists():
            return p
    return None


@pytest.mark.slow
def test_seek_many_on_the_embedded_model(smol):
    """4 GSM8K problems, batch 4, fp32: the same answers and reward histories as seek(); a token
    that differs must be a near-tie of seek()'s own decoding (conftest.assert_same_or_near_tie)."""
    from latentseek_fast.data import load_problems
    from latentseek_fast.prompts import build_prompt

    path = _gsm8k_path()
    if path is None:
        pytest.skip("shared/data/gsm8k_test.jsonl not found above the repository")
    model, tok = smol
    problems = load_problems(str(path))[:4]
    kw = {"max_new_tokens": 32, "rho": 0.2, "lr": 0.05, "max_steps": 2, "backend": "torch"}
    want = [lsf.seek(model, tok, p, **kw) for p in problems]
    got = lsf.seek_many(model, tok, problems, batch_size=4, **kw)
    for i, (g, w) in enumerate(zip(got, want)):
        if g.answer_ids == w.answer_ids and g.original_ids == w.original_ids:
            assert g.rewards == w.rewards and g.stopped == w.stopped and g.answer == w.answer
            continue
        # The first token where seek_many left seek()'s path must be a near-tie for seek().
        a, b = (
            (g.original_ids, w.original_ids)
            if g.original_ids != w.original_ids
            else (g.answer_ids, w.answer_ids)
        )
        prompt = tok(build_prompt(tok, problems[i].question)).input_ids
        k = assert_same_or_near_tie(model, prompt, b, a, what=f"problem {i}")
        if b is w.answer_ids:
            assert k >= w.update_length, f"problem {i}: re-decoded latent token {k} differs"


def test_decoder_rejects_sliding_window_layers():
    from transformers import AutoModelForCausalLM, Qwen2Config

    cfg = Qwen2Config(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        use_sliding_window=True,
        sliding_window=8,
        max_window_layers=0,
    )
    with pytest.raises(ValueError, match="sliding_attention"):
        HFDecoder(AutoModelForCausalLM.from_config(cfg))
