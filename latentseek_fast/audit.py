"""The near-tie audit: which greedy decisions of a seek could flip on another machine.

Greedy decoding is exact only where no decision is a near-tie. The logits of the same token
sequence differ by rounding between thread counts, batch blockings, GEMM implementations and
GPUs; a decision whose top-2 logit gap (the chosen logit minus the runner-up) is below that
noise can flip, and every token after it with it. Every decision the package makes records its
gap: the original answer's and the continuations' tokens (``decoding.rows.Row.gaps``), the
re-decoded latent tokens ``argmax(W z')`` (``ops.latent_policy_grad``'s ``gap``) and the
verifier replies of a ``ReplyReward``. ``TieAudit`` is the record of one scored answer;
``SeekResult.audit`` holds one per reward.

A decision is *near-tie* when its gap is below ``tie_gap`` (``SeekConfig.tie_gap``; by default
``TIE_GAPS`` for the model's dtype). An answer is *fragile* when a near-tie decision comes before
its extracted answer is complete (``fragile``), or when one of the verifier replies that scored
it has a near-tie decision (a flipped reply can change the reward): another machine may then
produce a different answer or reward, and the seek's path from there on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# Default ``tie_gap`` per model dtype (by name; this module imports no torch, so that results
# files can be read without it): 10x the largest change of a real decision's top-2 gap that
# reordering the same computation produced, rounded up to 1, 2 or 5 x 10^k
# (bench/results/ties/README.md; embedded SmolLM2, 8 GSM8K answers of 128 tokens, AMD EPYC):
# 1 vs 2 threads, one row of 16 vs alone, whole-sequence prefill vs token by token, the plain
# cache vs the slot store, eager vs sdpa attention, the fused torch/triton heads vs F.linear.
# fp32: largest 4.96e-5 (batch 16 vs alone), no flip; the smallest real gap seen was 3.8e-3.
# bf16: largest 0.5 and up to 11 of 1001 decisions flipped (the logits are bf16: 2.3 % of
# decisions are exact ties), so most bf16 answers are fragile at any threshold. fp16: not
# measured; bf16's 0.5 scaled by fp16's 8x finer rounding, times 10.
TIE_GAPS = {
    "float32": 5e-4,
    "float16": 1.0,
    "bfloat16": 5.0,
}
TIE_GAP_OTHER = TIE_GAPS["bfloat16"]  # an unlisted dtype is taken as coarse as bf16


def resolve_tie_gap(tie_gap: float | None, dtype) -> float:
    """``tie_gap`` itself, or the measured default for ``dtype`` (a torch dtype or its name, such
    as ``"bfloat16"``) when it is None."""
    if tie_gap is not None:
        return float(tie_gap)
    return TIE_GAPS.get(str(dtype).removeprefix("torch."), TIE_GAP_OTHER)


@dataclass
class TieAudit:
    """The near-tie audit of one scored answer (one greedy decision per token of the answer).

    - ``min_gap``: the smallest top-2 logit gap among its decisions (None: none audited);
      ``min_at``: the token index where it occurred;
    - ``decisions``: the decisions audited (tokens with a known gap);
    - ``below``: token indices of the decisions whose gap is below ``tie_gap``, ascending;
      ``below_chars``: where each starts in the answer's text (``len(decode(ids[:i]))``);
    - ``reply_min_gap``/``reply_below``: the same over the verifier replies that scored it (a
      ``ReplyReward``; None/0 for other rewards, whose decisions are not the package's).
    """

    tie_gap: float
    min_gap: float | None = None
    min_at: int | None = None
    decisions: int = 0
    below: list[int] = field(default_factory=list)
    below_chars: list[int] = field(default_factory=list)
    reply_min_gap: float | None = None
    reply_below: int = 0

    def first_char_below(self) -> int | None:
        """The text offset of the first near-tie decision of the answer (None: there is none)."""
        return self.below_chars[0] if self.below_chars else None


def audit_answer(
    ids: Sequence[int],
    gaps: Sequence[float | None],
    tie_gap: float,
    decode: Callable[[list[int]], str],
    replies: Sequence[Sequence[float]] = (),
) -> TieAudit:
    """The ``TieAudit`` of an answer of tokens ``ids`` whose decisions had top-2 gaps ``gaps``
    (aligned with ``ids``; None where unknown) and of the replies that scored it (one gap list
    per reply). ``decode(ids)`` is the text of a token prefix (the tokenizer's ``decode``)."""
    if len(gaps) != len(ids):
        raise ValueError(f"audit_answer: {len(gaps)} gaps for {len(ids)} tokens; expected one per token")
    known = [(i, g) for i, g in enumerate(gaps) if g is not None]
    audit = TieAudit(tie_gap=tie_gap, decisions=len(known))
    if known:
        at, gap = min(known, key=lambda ig: ig[1])
        audit.min_gap, audit.min_at = _finite(gap), at
    audit.below = [i for i, g in known if g < tie_gap]
    audit.below_chars = [len(decode(list(ids[:i]))) for i in audit.below]
    flat = [g for reply in replies for g in reply]
    if flat:
        audit.reply_min_gap = _finite(min(flat))
        audit.reply_below = sum(g < tie_gap for g in flat)
    return audit


def _finite(g: float) -> float | None:
    """A gap as results files keep it: None for an infinite one (a one-token vocabulary)."""
    return float(g) if math.isfinite(g) else None


def fragile(audit: TieAudit | dict, text: str, answer_of: Callable[[str], object]) -> bool:
    """Whether the answer ``text`` (audited by ``audit``, a ``TieAudit`` or its dict) is fragile:
    a verifier reply that scored it has a near-tie decision, or a near-tie decision of the
    answer comes before its extracted answer is complete, i.e. ``answer_of`` (the final-answer
    extractor) reads something else in the text before that decision than in the whole text."""
    a = audit if isinstance(audit, dict) else audit.__dict__
    if a.get("reply_below", 0):
        return True
    chars = a.get("below_chars") or []
    if not chars:
        return False
    final = answer_of(text)
    if final is None:  # no answer: a flip anywhere could give one
        return True
    return any(answer_of(text[:c]) != final for c in chars)
