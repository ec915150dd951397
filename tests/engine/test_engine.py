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
from conftest import SmallTokenizer, assert_same_or_near_tie, make_tiny_model, overflow_updates

import latentseek_fast as lsf
from latentseek_fast import baseline
from latentseek_fast.decoding.slots import kv_bytes_per_position
from latentseek_fast.engine import (
    IterationDone,
    OriginalDone,
    OriginalToken,
    ProblemDone,
    ProblemError,
    batched,
)
from latentseek_fast.engine.batched import CPU_AUTO_ROWS, auto_batch_size
from latentseek_fast.rewards import ReplyReward, SelfReward

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
    # Plain decoding (one token per forward, no reuse): the rounds above are timed by it.
    res = lsf.seek_many(
        model,
        tokenizer,
        QUESTIONS[:5],
        rewards,
        batch_size=4,
        backend="torch",
        draft_tokens=0,
        reuse=False,
        **SETTINGS,
    )
    L = 5
    assert [r.iterations for r in res] == [0, 3, 3, 3, 3] and {r.update_length for r in res} == {L}
    assert calls["lpg"] == [3 * L, 3 * L, L, 4 * L, 4 * L, L]
    assert calls["adam"] == [(3 * L, 1), (3 * L, 2), (L, 1), (3 * L, 3), (L, 2), (L, 3)]


@pytest.mark.parametrize("max_positions", [None, 16], ids=["default", "in-pieces"])
def test_self_reward_verifiers_batched_as_rows(llama64, tokenizer, monkeypatch, max_positions):
    """SelfReward's four verifier prompts of every due problem decode as engine rows; the
    rewards equal those of seek() with each verifier reply decoded alone on the model's own
    cache (not the slot store). ``in-pieces``: at most 16 positions per forward, so the prompts
    (and the 12 verifier prompts that are due together) are fed in pieces."""
    from latentseek_fast.decoding import batch
    from latentseek_fast.decoding import slots as dmod

    if max_positions is not None:
        monkeypatch.setattr(dmod, "CPU_MAX_POSITIONS", max_positions)
    sizes = []  # positions computed per forward
    forward = dmod.HFDecoder._forward

    def spy(self, slots, feeds):
        sizes.append(len(slots) * max(len(t) for t in feeds.values()))
        return forward(self, slots, feeds)

    monkeypatch.setattr(dmod.HFDecoder, "_forward", spy)
    forks = []
    fork = dmod.HFDecoder.fork

    def fork_spy(self, row, source, length):
        forks.append(length)
        return fork(self, row, source, length)

    monkeypatch.setattr(dmod.HFDecoder, "fork", fork_spy)
    sr = SelfReward(llama64, tokenizer, max_new_tokens=6)
    problems = QUESTIONS[:3]
    with monkeypatch.context() as m:
        m.setattr(batch, "slot_support", lambda model: "the oracle decodes each reply alone")
        want = oracle(llama64, tokenizer, problems, reward=sr, backend="reference", max_steps=2)
    assert not forks and not sizes  # the oracle never touched the slot store
    got = lsf.seek_many(
        llama64, tokenizer, problems, sr, batch_size=3, backend="reference", **{**SETTINGS, "max_steps": 2}
    )
    assert_same(got, want)
    assert all(r.timings["reward"] > 0 for r in got)
    # the near-tie audit of the verifier replies: the same in both drivers (fp64)
    for g, w in zip(got, want):
        assert len(g.audit) == len(g.rewards) and all(a.reply_min_gap is not None for a in g.audit)
        assert [a.reply_min_gap for a in g.audit] == pytest.approx(
            [a.reply_min_gap for a in w.audit], abs=1e-9
        )
    # 3 of the 4 verifier prompts of each scored answer fork the shared prefix (system,
    # question, solution) from the first
    assert len(forks) == 3 * sum(len(r.rewards) for r in got) and min(forks) >= 16
    if max_positions is None:
        assert max(sizes) > 16  # so the in-pieces case does cut
    else:
        assert max(sizes) <= 16


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
    from latentseek_fast.app.data import Problem

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
    "kw,error,match",
    [
        ({"batch_size": 0}, ValueError, "batch_size=0"),
        ({"batch_size": "many"}, ValueError, "batch_size='many': expected an integer >= 1 .or 'auto'"),
        ({"on_event": 3}, TypeError, "on_event=3"),
        ({"rho": 2.0}, ValueError, "rho=2.0"),
    ],
)
def test_bad_arguments_are_named(llama64, tokenizer, kw, error, match):
    with pytest.raises(error, match=match):
        lsf.iter_seek(llama64, tokenizer, QUESTIONS[:2], hashed_reward, **kw)
    with pytest.raises(ValueError, match="problems="):
        lsf.seek_many(llama64, tokenizer, "What is 2+3?", hashed_reward)
    with pytest.raises(ValueError, match=r"problems\[1\]: problem=''"):
        lsf.seek_many(llama64, tokenizer, ["What is 2+3?", ""], hashed_reward)


def test_auto_batch_size_takes_what_fits_up_to_the_row_cap(llama64, tokenizer):
    """``batch_size="auto"``: problems that fit in half the free memory at the longest row's KV
    bytes, at most ``CPU_AUTO_ROWS`` rows (a self-rewarded problem holds 5), at most the problems,
    at least 1; the Engine sizes a longest row from its prompts, ``max_new_tokens`` and the
    verifier cap."""
    cfg = llama64.config
    per_position = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * 8  # fp64
    assert kv_bytes_per_position(llama64) == per_position
    free = per_position * 1000 * 10 * 2  # ten 1000-position rows in half of it
    n, why = auto_batch_size(llama64, 100, 1000, free_bytes=free)
    assert n == 10 and "10 fit" in why
    huge = 2**50
    assert auto_batch_size(llama64, 7, 1000, free_bytes=huge)[0] == 7
    assert auto_batch_size(llama64, 500, 1000, free_bytes=huge)[0] == CPU_AUTO_ROWS
    assert auto_batch_size(llama64, 500, 1000, rows_per_problem=5, free_bytes=huge)[0] == CPU_AUTO_ROWS // 5
    assert auto_batch_size(llama64, 500, 10**9, free_bytes=1)[0] == 1
    seen = []
    real = batched.auto_batch_size
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batched, "auto_batch_size", lambda *a, **k: seen.append(a) or real(*a, **k))
        engine = batched.Engine(llama64, tokenizer, QUESTIONS[:3], hashed_reward, max_new_tokens=20)
        assert engine.batch_size == 3 and "3 problems in flight" in engine.batch_reason
        sr = SelfReward(llama64, tokenizer, max_new_tokens=30)
        batched.Engine(llama64, tokenizer, QUESTIONS[:3], sr, max_new_tokens=20)
    longest = max(len(ids) for ids in engine.prompt_ids) + 2 * 20
    assert seen == [(llama64, 3, longest, 1), (llama64, 3, longest + 30, 5)]


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
    from latentseek_fast.app.data import load_problems
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


# -- drafts, reuse and the numeric guard in the engine ------------------------------------------

# Raw prompts (no chat template) with different last tokens, so the chain model below starts
# each answer at a different place of its chain.
CHAIN_PROMPTS = [
    "Add seven and eight",
    "A train leaves at noon and goes 60 miles per hour for 3 hours, how far",
    "Name a prime number",
    "If x is 4 what is x squared",
    "Compute twelve times twelve please",
    "How many legs do spiders have",
    "two plus three",
]


def chain_model(tokenizer, seed=5, scale=0.5, chain=12):
    """A tiny fp64 model whose greedy text mostly walks a fixed chain of tokens ending in eos
    (id 2): the LM head maps each token's embedding to its successor (a chain token to the next
    one, any other token into the chain), the layers (weights x ``scale``) perturb that. So the
    text repeats itself and the prompt (the chain's tokens are prompt words): drafts are accepted
    and rejected, a drafted eos is accepted (a stop inside an accepted draft), and re-decoded
    tokens repeat (exact reuse). The seed was chosen for all of these."""
    model = make_tiny_model("llama", tie=False, seed=seed, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    vocab = model.lm_head.weight.shape[0]
    words = sorted({t for p in CHAIN_PROMPTS for t in tokenizer(p).input_ids})
    S = torch.tensor(words)[torch.randperm(len(words), generator=g)[: chain - 1]].tolist() + [2]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1 and "embed" not in name and "lm_head" not in name:
                p.mul_(scale)
        E = model.model.embed_tokens.weight
        succ = torch.tensor(S)[torch.arange(vocab) % len(S)]
        for i, s in enumerate(S[:-1]):
            succ[s] = S[i + 1]
        W = torch.zeros_like(model.lm_head.weight)
        W.index_add_(0, succ, E / E.norm(dim=1, keepdim=True).clamp_min(1e-6))  # the pad row is 0
        model.lm_head.weight.copy_(3.0 * W)
    return model


class DraftSpy:
    """Counts, over every ``DraftRow`` (``seek``'s and the engine's), drafts accepted and a stop
    inside an accepted draft (fewer tokens kept than the accepted drafts plus greedy's own), split
    by rows with a pool (solver rows) and without (the engine's verifier rows)."""

    def __init__(self, monkeypatch):
        from latentseek_fast.decoding import drafts

        self.counts = {"stop_in_draft": 0, "accepted": 0, "rejected": 0, "verifier_accepted": 0}
        observe, extend = drafts.DraftRow.observe, drafts.DraftRow.extend
        spy = self

        def observe_spy(row, proposed, accepted):
            row._spy = (proposed, accepted)
            key = "accepted" if row.pool is not None else "verifier_accepted"
            spy.counts[key] += accepted
            spy.counts["rejected"] += proposed - accepted
            return observe(row, proposed, accepted)

        def extend_spy(row, tokens):
            tokens = list(tokens)
            last = getattr(row, "_spy", None)
            if last is not None and last[1] > 0 and len(tokens) < last[1] + 1:
                spy.counts["stop_in_draft"] += 1
            row._spy = None
            return extend(row, tokens)

        monkeypatch.setattr(drafts.DraftRow, "observe", observe_spy)
        monkeypatch.setattr(drafts.DraftRow, "extend", extend_spy)

    def take(self) -> dict:
        out = dict(self.counts)
        for k in self.counts:
            self.counts[k] = 0
        return out


CHAIN = {"max_new_tokens": 16, "rho": 0.5, "lr": 0.5, "max_steps": 3, "backend": "reference"}
_CHAIN_ORACLE: dict = {}


@pytest.fixture(scope="module")
def chain64(tokenizer):
    return chain_model(tokenizer)


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_seek_many_drafted_with_reuse_equals_plain_seek(chain64, tokenizer, monkeypatch, batch_size):
    """Drafts and exact reuse on: the results of plain seek() (one token per forward), and the
    decode counts and reuses of seek() with the same drafts; the run rejects drafts, accepts
    them and stops inside an accepted draft."""
    spy = DraftSpy(monkeypatch)
    if not _CHAIN_ORACLE:
        _CHAIN_ORACLE["plain"] = [
            lsf.seek(chain64, tokenizer, q, hashed_reward, prompt=q, draft_tokens=0, **CHAIN)
            for q in CHAIN_PROMPTS
        ]
        _CHAIN_ORACLE["drafted"] = [
            lsf.seek(chain64, tokenizer, q, hashed_reward, prompt=q, **CHAIN) for q in CHAIN_PROMPTS
        ]
        _CHAIN_ORACLE["spy"] = spy.take()
    plain, drafted = _CHAIN_ORACLE["plain"], _CHAIN_ORACLE["drafted"]
    spy.take()
    got = lsf.seek_many(
        chain64,
        tokenizer,
        CHAIN_PROMPTS,
        hashed_reward,
        batch_size=batch_size,
        prompts=CHAIN_PROMPTS,
        **CHAIN,
    )
    counts = spy.take()
    assert_same(got, plain)
    assert [g.texts for g in got] == [w.texts for w in plain]
    assert [g.reused for g in got] == [w.reused for w in drafted]
    assert [g.decode_stats for g in got] == [w.decode_stats for w in drafted]
    assert counts == _CHAIN_ORACLE["spy"]
    assert counts["accepted"] > 0 and counts["rejected"] > 0 and counts["stop_in_draft"] > 0
    assert sum(g.reused for g in got) > 0
    assert sum(g.decode_stats["forwards"] for g in got) < sum(w.decode_stats["forwards"] for w in plain)


class ScriptedReward:
    """``hashed_reward`` that counts its calls per question; ``deterministic`` as given."""

    def __init__(self, deterministic):
        self.deterministic = deterministic
        self.calls: dict[str, int] = {}

    def __call__(self, question, answer):
        self.calls[question] = self.calls.get(question, 0) + 1
        return hashed_reward(question, answer)


@pytest.mark.parametrize("deterministic", [True, False])
def test_reuse_counts_and_reward_calls_equal_seeks(chain64, tokenizer, deterministic):
    """A reused continuation reuses the reward only when the reward is deterministic: the
    engine calls the reward exactly as often as seek() does, and reuses as often."""
    want_reward, got_reward = ScriptedReward(deterministic), ScriptedReward(deterministic)
    want = [lsf.seek(chain64, tokenizer, q, want_reward, prompt=q, **CHAIN) for q in CHAIN_PROMPTS]
    got = lsf.seek_many(
        chain64, tokenizer, CHAIN_PROMPTS, got_reward, batch_size=4, prompts=CHAIN_PROMPTS, **CHAIN
    )
    assert_same(got, want)
    assert [g.reused for g in got] == [w.reused for w in want] and sum(g.reused for g in got) > 0
    assert got_reward.calls == want_reward.calls
    calls = sum(want_reward.calls.values())
    scored = sum(len(w.rewards) for w in want)
    assert calls == scored - (sum(w.reused for w in want) if deterministic else 0)


def test_self_reward_verifier_rows_drafted(tokenizer, monkeypatch):
    """Verifier rows draft from their own prompt, which quotes the solution, and their own reply:
    drafts are accepted there (the replies, after the template's final newline, repeat "4"), and
    the rewards are those of seek()'s undrafted verifier generation."""
    spy = DraftSpy(monkeypatch)
    model = lively_model("llama", eos_boost=1.0)
    newline = tokenizer("\n", add_special_tokens=False).input_ids[-1]
    four = tokenizer("4", add_special_tokens=False).input_ids[0]
    with torch.no_grad():  # after a newline or a "4" comes "4" (logit ~24, the others' max ~6)
        E = model.model.embed_tokens.weight
        model.lm_head.weight[four] = 3.0 * (E[newline] / E[newline].norm() + E[four] / E[four].norm())
    sr = SelfReward(model, tokenizer, max_new_tokens=8)
    problems = CHAIN_PROMPTS[:3]
    kw = {**CHAIN, "max_steps": 2}
    want = [lsf.seek(model, tokenizer, q, sr, prompt=q, **kw) for q in problems]
    got = lsf.seek_many(model, tokenizer, problems, sr, batch_size=3, prompts=problems, **kw)
    assert_same(got, want)
    assert spy.take()["verifier_accepted"] > 0


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_numeric_guard_names_problem_and_step(tokenizer, monkeypatch, backend):
    """seek's per-step guard in the engine: an out-of-range reward, and an update that overflows
    the latents (``test_numeric_ranges.overflow_updates``), stop with ProblemError naming the
    problem's index, the step and, for the overflow, the learning rate."""
    model = lively_model("llama", dtype=torch.float32, seed=2)
    rewards = [hashed_reward, lambda q, a: -1e7, hashed_reward]  # |reward| > REWARD_MAX
    with pytest.raises(
        ProblemError, match=r"problem 1: ValueError: seek step 1 of problem 1: reward=-10000000.0: "
    ) as e:
        lsf.seek_many(model, tokenizer, QUESTIONS[:3], rewards, batch_size=3, backend=backend, **SETTINGS)
    assert e.value.index == 1
    overflow_updates(monkeypatch)
    with pytest.raises(
        ProblemError,
        match=r"problem 0: RuntimeError: seek step 1 of problem 0: NaN or inf in the latents after the "
        r"update \(reward -1.0\); the learning rate lr=0.5 is the likely cause",
    ):
        lsf.seek_many(
            model, tokenizer, QUESTIONS[:2], lambda q, a: -1.0, batch_size=2, backend=backend, **SETTINGS
        )


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_seek_many_cost_policy_equals_plain_seek(chain64, tokenizer, batch_size):
    """draft_policy="cost" changes how many drafts a forward feeds, never the results: those of
    plain seek(); at batch 1 the decode counts are seek()'s with the same policy, and wider
    batches feed no more drafts than the full policy does."""
    plain = [
        lsf.seek(chain64, tokenizer, q, hashed_reward, prompt=q, draft_tokens=0, **CHAIN)
        for q in CHAIN_PROMPTS
    ]
    kw = dict(batch_size=batch_size, prompts=CHAIN_PROMPTS, **CHAIN)
    got = lsf.seek_many(chain64, tokenizer, CHAIN_PROMPTS, hashed_reward, draft_policy="cost", **kw)
    assert_same(got, plain)
    assert [g.texts for g in got] == [w.texts for w in plain]
    if batch_size == 1:
        single = [
            lsf.seek(chain64, tokenizer, q, hashed_reward, prompt=q, draft_policy="cost", **CHAIN)
            for q in CHAIN_PROMPTS
        ]
        assert [g.decode_stats for g in got] == [w.decode_stats for w in single]
    else:
        full = lsf.seek_many(chain64, tokenizer, CHAIN_PROMPTS, hashed_reward, **kw)
        assert sum(g.decode_stats["drafted"] for g in got) < sum(f.decode_stats["drafted"] for f in full)


class _MinusOne:
    """The research code's reward-model interface, always -1."""

    def get_reward(self, question, solution):
        return -1.0


def test_batched_driver_gives_the_research_ways_answers():
    """The batched driver against the full-recompute research way (``baseline``), two problems in
    one batch: a tiny fp64 model over a 64-token vocabulary whose only stop token is eos (so
    seek's stop words are the research code's) and the research code's Adam on model-dtype
    latents. The research way makes up to cap + 1 tokens, so its caps are one lower."""
    model = make_tiny_model(vocab_size=64, hidden=32, layers=1, tie=False, seed=17, dtype=torch.float64)
    with torch.no_grad():
        model.lm_head.weight[2] *= 1.3  # eos comes after ~10 tokens (conftest.small_model)
    tok = SmallTokenizer()
    prompts, M = ["What is 2+3?", "Name 7 * 6."], 12
    got = lsf.seek_many(
        model, tok, prompts, lambda q, a: -1.0, prompts=prompts, batch_size=2, max_new_tokens=M,
        max_steps=2, lr=0.5, rho=0.5, backend="reference", latent_dtype="model", draft_tokens=0,
    )  # fmt: skip
    for prompt, res in zip(prompts, got):
        answer, states, ids = baseline.original_generation(prompt, model, tok, "cpu", cap=M - 1)
        final, rewards, T, _, L = baseline.optimized_generation(
            _MinusOne(), model, tok, "cpu", prompt, prompt, answer, states, ids,
            max_num_steps=2, lr=0.5, k=0.5, max_new_tokens=M - 1,
        )  # fmt: skip
        assert res.original_answer == answer and res.original_length == T and res.update_length == L
        assert res.rewards == rewards == [-1.0, -1.0, -1.0]
        assert res.answer == final and final != answer  # the two steps moved the answer


class LengthReward(ReplyReward):
    """A user-written reward on the ``ReplyReward`` protocol: one prompt quoting the answer's end,
    the reward read from the reply's length. ``generated`` counts the calls of
    ``generate_replies`` (its own batch of replies, as ``compute`` decodes them)."""

    deterministic = True

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer, self.max_new_tokens, self.generated = model, tokenizer, 6, 0

    def reply_prompts(self, question, answer):
        return {"echo": f"<|im_start|>user\nRepeat: {answer[-40:]}<|im_end|>\n<|im_start|>assistant\n"}

    def reward_from_replies(self, question, answer, replies):
        return -min(len(replies["echo"]), 30) / 30

    def generate_replies(self, prompts, on_progress=None, gaps=None):
        self.generated += 1
        return super().generate_replies(prompts, on_progress, gaps)


def test_user_reply_reward_is_batched_as_rows(llama64, tokenizer):
    """A user's ReplyReward: seek decodes its replies with its generate_replies (its own batch,
    as compute does); seek_many decodes them as rows of the shared batch and never calls it;
    the rewards and answers agree (and agree with compute)."""
    problems = QUESTIONS[:3]
    alone = LengthReward(llama64, tokenizer)
    want = oracle(llama64, tokenizer, problems, alone, backend="reference")
    assert alone.generated == sum(len(r.rewards) for r in want) - sum(r.reused for r in want)
    assert [alone.compute(q, r.answer) for q, r in zip(problems, want)] == [r.final_reward for r in want]
    batched = LengthReward(llama64, tokenizer)
    got = lsf.seek_many(llama64, tokenizer, problems, batched, batch_size=3, backend="reference", **SETTINGS)
    assert batched.generated == 0
    assert_same(got, want)
    assert len({r for res in want for r in res.rewards}) > 1  # the replies' lengths differ
