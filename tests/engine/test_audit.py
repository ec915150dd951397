"""The near-tie audit (``audit``): what it records, and that it catches real divergences.

The reproducibility check: the same 4-problem seek run two ways that only reorder floating-point
work (1 vs 2 threads, batch 1 vs 4) must give the same answers, except where an answer was
flagged by both runs at or before the first character where they differ. A model with pairs of
nearly identical LM-head rows makes such near-ties common, so divergences do happen; a run whose
audit is forged (every gap reported 1 larger) must fail the same check.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import SmallTokenizer, make_tiny_model

from latentseek_fast import SeekConfig, seek, seek_many
from latentseek_fast.audit import TIE_GAPS, TieAudit, audit_answer, fragile, resolve_tie_gap
from latentseek_fast.decoding import rows as decode_rows
from latentseek_fast.engine.problem import ProblemSeek

QUESTIONS = ["What is 2+3?", "Name a prime.", "7 times 6?", "Spell cat."]


def _decode(ids):
    return "".join(chr(65 + i % 26) for i in ids)


def test_audit_answer_records_the_smallest_gap_and_the_near_ties():
    a = audit_answer([1, 2, 3, 4], [0.5, 0.001, None, 0.0002], 0.01, _decode, replies=[[0.3, 0.2], [0.05]])
    assert (a.min_gap, a.min_at, a.decisions) == (0.0002, 3, 3)
    assert a.below == [1, 3] and a.below_chars == [1, 3]
    assert (a.reply_min_gap, a.reply_below) == (0.05, 0)
    assert audit_answer([1], [float("inf")], 0.01, _decode).min_gap is None  # a one-token vocabulary
    none = audit_answer([1, 2], [None, None], 0.01, _decode)
    assert (none.min_gap, none.min_at, none.decisions, none.below) == (None, None, 0, [])
    with pytest.raises(ValueError, match="2 gaps for 3 tokens"):
        audit_answer([1, 2, 3], [0.1, 0.2], 0.01, _decode)


def test_fragile_means_a_near_tie_before_the_extracted_answer_is_complete():
    text = "so 12 + 3 = 15. The answer is \\boxed{15}. Done, 99"
    box = text.index("\\boxed")
    boxed = lambda t: t[t.rindex("{") + 1 : t.rindex("}")] if "\\boxed{" in t and "}" in t[box:] else None  # noqa: E731
    near = lambda *chars: TieAudit(tie_gap=0.01, below=[0] * len(chars), below_chars=list(chars))  # noqa: E731
    assert not fragile(near(), text, boxed)
    assert fragile(near(3), text, boxed)  # before the box
    assert fragile(near(box + 8), text, boxed)  # inside it: "\\boxed{1" reads no answer yet
    assert not fragile(near(len(text) - 3), text, boxed)  # after it: the answer is settled
    assert fragile(near(len(text) - 3), "no answer here at all", boxed)  # no answer: a flip may give one
    assert fragile(TieAudit(tie_gap=0.01, reply_below=1), text, boxed)  # a verifier reply could flip
    assert fragile({"below_chars": [3], "reply_below": 0}, text, boxed)  # a results row's dict


def test_tie_gap_defaults_per_dtype_and_is_validated():
    assert resolve_tie_gap(None, torch.float32) == TIE_GAPS["float32"]
    assert resolve_tie_gap(None, torch.bfloat16) == TIE_GAPS["bfloat16"] == resolve_tie_gap(None, "bfloat16")
    assert TIE_GAPS["float32"] < TIE_GAPS["float16"] < TIE_GAPS["bfloat16"]
    assert resolve_tie_gap(0.5, torch.bfloat16) == 0.5
    for bad in (-1.0, float("inf"), float("nan"), True, "x"):
        with pytest.raises(ValueError, match="tie_gap"):
            SeekConfig(tie_gap=bad)


def _reward(question, answer):
    return 0.0 if answer.count("e") >= 3 else -1.0


CONFIG = dict(max_steps=3, max_new_tokens=24, rho=0.3, backend="torch", draft_tokens=0)


def _near_tie_model(seed: int = 17):
    """A 64-token model whose head rows 3..34 come in pairs 1e-7 apart: a decision that lands on
    a pair is a near-tie (gap ~1e-7), the others are ordinary."""
    model = make_tiny_model(vocab_size=64, hidden=32, layers=1, tie=False, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        W = model.lm_head.weight
        for k in range(3, 35, 2):
            W[k + 1] = W[k] + 1e-7 * torch.randn(W.shape[1], generator=g)
    return model


def test_every_scored_answer_is_audited_and_both_drivers_agree():
    """One audit per reward; every decision of every answer (original tokens, re-decoded latent
    tokens, continuations) is audited; ``tie_gap`` 0 flags nothing and a huge one everything;
    seek and seek_many (batch 4) record the same audits."""
    model, tok = _near_tie_model(), SmallTokenizer()
    q = QUESTIONS[0]
    res = seek(model, tok, q, _reward, prompt=q, **CONFIG, tie_gap=1e9)
    assert len(res.audit) == len(res.rewards) >= 2 and res.tie_gap == 1e9
    assert res.audit[0].decisions == res.original_length == len(res.audit[0].below)
    assert res.audit[-1].decisions == res.final_length == len(res.audit[-1].below)
    assert res.audit[0].min_gap == pytest.approx(min(_fp64_gaps(model, tok, q, res.original_ids)), abs=1e-6)
    res0 = seek(model, tok, q, _reward, prompt=q, **CONFIG, tie_gap=0.0)
    assert all(a.below == [] for a in res0.audit) and res0.texts == res.texts
    alone = _runs(model, torch.get_num_threads(), 1, tie_gap=1e-3)
    many = _runs(model, torch.get_num_threads(), 4, tie_gap=1e-3)
    check_flagged(alone, many)
    for a, b in zip(alone, many):
        if a.texts == b.texts:
            for x, y in zip(a.audit, b.audit):
                assert x.decisions == y.decisions and x.below == y.below and x.below_chars == y.below_chars
                assert x.min_gap == pytest.approx(y.min_gap, rel=1e-3, abs=1e-6)


def _fp64_gaps(model, tok, question, ids):
    """The original answer's decisions recomputed in fp64 from one full forward."""
    prompt = tok(question).input_ids[0].tolist()
    m64 = copy.deepcopy(model).double()
    with torch.no_grad():
        logits = m64(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1 : -1]
    top = logits.topk(2, dim=-1).values
    return (top[:, 0] - top[:, 1]).tolist()


def check_flagged(run_a, run_b) -> int:
    """The reproducibility invariant between two runs of the same problems: for each problem, the
    first scored answer whose text differs must be flagged by both runs' audits at or before the
    first differing character (a near-tie decision of the answer there, or a near-tie in a verifier
    reply that scored an earlier answer). Returns how many problems diverged."""
    diverged = 0
    for p, (a, b) in enumerate(zip(run_a, run_b)):
        for i, (ta, tb) in enumerate(zip(a.texts, b.texts)):
            if ta == tb:
                if a.rewards[i] != b.rewards[i]:  # same text, other reward: only a reply can do that
                    assert a.audit[i].reply_below and b.audit[i].reply_below, (p, i)
                    diverged += 1
                    break
                continue
            c = next((j for j, (x, y) in enumerate(zip(ta, tb)) if x != y), min(len(ta), len(tb)))
            for name, res in (("first", a), ("second", b)):
                first = res.audit[i].first_char_below()
                assert first is not None and first <= c, (
                    f"problem {p}, answer {i}: the runs differ from character {c} ({ta[c : c + 8]!r} vs "
                    f"{tb[c : c + 8]!r}) but the {name} run's audit flags no near-tie at or before it "
                    f"(first near-tie at {first})"
                )
            diverged += 1
            break
        else:
            assert len(a.texts) == len(b.texts) and a.rewards == b.rewards, p
    return diverged


def _runs(model, threads, batch, **cfg):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if batch == 1:
            return [seek(model, SmallTokenizer(), q, _reward, prompt=q, **CONFIG, **cfg) for q in QUESTIONS]
        tok = SmallTokenizer()
        return seek_many(model, tok, QUESTIONS, _reward, prompts=QUESTIONS, batch_size=batch, **CONFIG, **cfg)
    finally:
        torch.set_num_threads(old)


def test_runs_that_only_reorder_arithmetic_differ_only_where_flagged():
    """1 vs 2 threads and batch 1 vs 4: every divergence is flagged by both runs at or before it."""
    model = _near_tie_model()
    base = _runs(model, 1, 1, tie_gap=1e-3)
    for threads, batch in ((2, 1), (1, 4), (2, 4)):
        diverged = check_flagged(base, _runs(model, threads, batch, tie_gap=1e-3))
        print(f"threads {threads}, batch {batch}: {diverged} of {len(QUESTIONS)} problems diverged")


def test_a_forged_audit_fails_the_check(monkeypatch):
    """A run on the same model with its head perturbed by 1e-5 of itself (a stand-in for another
    machine's rounding, large enough to flip the 1e-7 near-ties every time) diverges from the
    base run; the honest audits flag every divergence, an audit that reports every gap 1 larger
    does not."""
    model = _near_tie_model()
    other = _near_tie_model()
    with torch.no_grad():
        W = other.lm_head.weight
        W.mul_(1 + 1e-5 * torch.randn(W.shape, generator=torch.Generator().manual_seed(1)))
    base = _runs(model, 1, 4, tie_gap=1e-3)
    assert check_flagged(base, _runs(other, 1, 4, tie_gap=1e-3)) > 0
    real = decode_rows.top2_gap
    monkeypatch.setattr(decode_rows, "top2_gap", lambda logits, softcap=None: real(logits, softcap) + 1.0)
    stepped = ProblemSeek.stepped
    monkeypatch.setattr(
        ProblemSeek, "stepped", lambda self, t, gaps=None: stepped(self, t, [g + 1.0 for g in gaps])
    )
    forged = _runs(other, 1, 4, tie_gap=1e-3)
    with pytest.raises(AssertionError, match="flags no near-tie"):
        check_flagged(base, forged)
