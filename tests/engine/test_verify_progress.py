"""``VerifyProgress``: both drivers report a self-reward's verifier replies as they decode
(which answer, replies done of 4, tokens, tokens/s), throttled per problem; ``DecodeProgress``
the same for continuations.

Tiny random model in fp64 (the replies of a batch equal the replies decoded alone), 5-token
verifier replies, so the counts can be checked against the replies decoded independently.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model

import latentseek_fast as lsf
from latentseek_fast.decoding.batch import greedy_generate_batch
from latentseek_fast.engine import DecodeProgress, IterationDone, OriginalDone, ProblemDone, VerifyProgress
from latentseek_fast.engine.problem import ProblemSeek
from latentseek_fast.rewards import SelfReward

QUESTIONS = ["What is 2+3?", "Add 7 and 8."]
SETTINGS = {"max_new_tokens": 8, "rho": 0.5, "lr": 0.5, "max_steps": 1, "backend": "reference"}
CAP = 5


@pytest.fixture(scope="module")
def model():
    m = make_tiny_model("llama", tie=False, seed=0, dtype=torch.float64)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1:
                p.mul_(4.0)
    return m


def run(driver, model, tokenizer, monkeypatch, every):
    """The events and results of ``driver`` ("seek" or "seek_many") with self-reward, VerifyProgress
    at most every ``every`` seconds."""
    monkeypatch.setattr(ProblemSeek, "progress_every", every)
    events = []
    sr = SelfReward(model, tokenizer, max_new_tokens=CAP)
    if driver == "seek":
        results = [lsf.seek(model, tokenizer, QUESTIONS[0], sr, on_event=events.append, **SETTINGS)]
    else:
        results = lsf.seek_many(
            model, tokenizer, QUESTIONS, sr, batch_size=2, on_event=events.append, **SETTINGS
        )
    return events, results, sr


def verify_runs(events, index):
    """Problem ``index``'s events split at each scored answer: ``[(done event, [VerifyProgress
    before it]), ...]``; checks that nothing but those comes between."""
    runs, pending = [], []
    for e in events:
        if e.index != index:
            continue
        if isinstance(e, VerifyProgress):
            pending.append(e)
        elif isinstance(e, (OriginalDone, IterationDone, ProblemDone)):
            assert not pending or not isinstance(e, ProblemDone), "replies decoded for no scored answer"
            if not isinstance(e, ProblemDone):
                runs.append((e, pending))
            pending = []
    return runs


@pytest.mark.parametrize("driver", ["seek", "seek_many"])
def test_verifier_progress_arrives_with_right_counts(driver, model, tokenizer, monkeypatch):
    """Unthrottled (every decode step): each freshly scored answer's replies report from 0 of 4
    to 4 of 4, the answer it scores, and the tokens of the four replies, decoded independently."""
    events, results, sr = run(driver, model, tokenizer, monkeypatch, every=0.0)
    for i, res in enumerate(results):
        question = QUESTIONS[i]
        runs = verify_runs(events, i)
        assert len(runs) == len(res.rewards)
        fresh = 0
        for k, (done, progress) in enumerate(runs):
            assert (done.iteration if isinstance(done, IterationDone) else 0) == k
            if not progress:  # a reused continuation keeps its earlier reward: nothing decoded
                continue
            fresh += 1
            prompts = list(sr.reply_prompts(question, res.texts[k]).values())
            replies = greedy_generate_batch(model, tokenizer, prompts, CAP)
            assert {e.answer for e in progress} == {k} and {e.replies_total for e in progress} == {4}
            assert (progress[0].replies_done, progress[0].tokens) == (0, 0)
            assert (progress[-1].replies_done, progress[-1].tokens) == (4, sum(map(len, replies)))
            assert progress[-1].tokens_per_s > 0 and progress[-1].seconds > 0
            dones = [e.replies_done for e in progress]
            tokens = [e.tokens for e in progress]
            assert dones == sorted(dones) and tokens == sorted(tokens)
            # between reply finishes too: more events than the 5 of start and finishes
            assert len(progress) > len(set(dones))
        assert fresh == len(res.rewards) - res.reused


@pytest.mark.parametrize("driver", ["seek", "seek_many"])
def test_verifier_progress_is_throttled(driver, model, tokenizer, monkeypatch):
    """Throttled (no interval passes here): only the start and the finishing replies report,
    so ``on_event`` is not called per decode step."""
    events, results, _ = run(driver, model, tokenizer, monkeypatch, every=1e9)
    for i, res in enumerate(results):
        runs = [progress for _, progress in verify_runs(events, i) if progress]
        assert len(runs) == len(res.rewards) - res.reused  # every freshly scored answer reports
        for progress in runs:
            dones = [e.replies_done for e in progress]
            assert dones[0] == 0 and dones[-1] == 4
            assert all(a < b for a, b in zip(dones, dones[1:]))  # one event per change, at most 5


def test_verifier_progress_default_interval(model, tokenizer):
    """The default: at most one event per 2 s between reply finishes (these replies take
    milliseconds), so events come only at the start and as replies finish (5 per answer)."""
    assert ProblemSeek.progress_every == 2.0
    events = []
    sr = SelfReward(model, tokenizer, max_new_tokens=CAP)
    lsf.seek(model, tokenizer, QUESTIONS[1], sr, on_event=events.append, **SETTINGS)
    progress = [e for e in events if isinstance(e, VerifyProgress)]
    assert progress and len(progress) <= 5 * len([e for e in progress if e.replies_done == 0])


def minus_one(question, answer):
    return -1.0


@pytest.mark.parametrize("driver", ["seek", "seek_many"])
def test_continuation_progress(driver, model, tokenizer, monkeypatch):
    """Unthrottled, a ``DecodeProgress`` per continuation token (its iteration, counts up to the
    tokens the continuation decoded past the re-decoded ones); throttled, none."""
    settings = {**SETTINGS, "max_steps": 2, "reuse": False}
    monkeypatch.setattr(ProblemSeek, "progress_every", 0.0)
    events = []
    if driver == "seek":
        results = [lsf.seek(model, tokenizer, QUESTIONS[0], minus_one, on_event=events.append, **settings)]
    else:
        results = lsf.seek_many(
            model, tokenizer, QUESTIONS, minus_one, batch_size=2, on_event=events.append, **settings
        )
    for i, res in enumerate(results):
        mine = [e for e in events if e.index == i and isinstance(e, (DecodeProgress, IterationDone))]
        assert res.iterations == 2
        for k in (1, 2):
            done = next(e for e in mine if isinstance(e, IterationDone) and e.iteration == k)
            before = mine[: mine.index(done)]
            progress = [e for e in before if isinstance(e, DecodeProgress) and e.iteration == k]
            assert [e.tokens for e in progress] == list(range(1, done.tokens - res.update_length + 1))
    monkeypatch.setattr(ProblemSeek, "progress_every", 1e9)
    events.clear()
    lsf.seek(model, tokenizer, QUESTIONS[0], minus_one, on_event=events.append, **settings)
    assert not [e for e in events if isinstance(e, DecodeProgress)]
