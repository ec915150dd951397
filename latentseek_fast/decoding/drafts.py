"""Drafts for greedy decoding: tokens copied from text the problem already has, verified in one forward.

A continuation of LatentSeek often repeats text that the prompt or an earlier answer of the same
problem already holds (a repetition loop repeats its own text). So, before each forward, a row
drafts up to ``k`` tokens by finding the longest n-gram (n <= ``MAX_NGRAM``) ending its context
that occurred before, latest occurrence first, and copying what followed it. The model then runs
the token it has just chosen plus the drafts in one forward: that costs about as much as one token
(the forward is bound by reading the weights), and every draft that greedy decoding agrees with
is one forward saved. The longest agreeing prefix is kept, plus the model's own next token; the
rejected positions are cropped from the KV cache. The tokens, and the post-final-norm latent of
each, are those of plain greedy decoding in exact arithmetic (in floating point the latents differ
by the blocking of a many-token forward, ~1e-6 relative in fp32).

The pieces, usable apart:

- ``DraftPool``: the n-gram index over a problem's documents (prompt, earlier answers), each
  n-gram mapped to the latest place it was followed by a token.
- ``DraftRow``: one decoding row: its context, an index of its own new text (which takes
  precedence over the pool, being the latest), ``propose(k)`` and the back-off state (``observe``).
- ``best_width``: how many drafts a forward feeds under the ``"cost"`` policy.

The forward that verifies the drafts, and the acceptance, are ``rows.advance``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from .._util import check_choice, check_int
from ..config import DRAFT_POLICIES

# Longest n-gram matched. The simulation (GSM8K test 10-13, 3 iterations, drafts from the
# latest match of the context's last 1-4 tokens) accepted 3.4 tokens per forward.
MAX_NGRAM = 4

# Back-off: after a draft is rejected outright, the row stops drafting for BACKOFF_FIRST forwards,
# doubling with each further outright rejection up to BACKOFF_MAX; an accepted draft resets it.
# A rejected 8-token draft costs ~2 forwards (embedded SmolLM2 fp32, 1 thread: 1 token 80 ms,
# 9 tokens 158 ms), so with nothing to copy, doubling pauses keep the waste to O(log n) forwards.
BACKOFF_FIRST = 1
BACKOFF_MAX = 64

# How many drafts a forward feeds (``SeekConfig.draft_policy``): "full" feeds every draft a row
# proposes (up to ``k``); "cost" cuts them to the feed width that maximises the expected tokens
# per unit of forward cost (``best_width``), so that low-acceptance drafts, and in a batch the
# padding every row pays for the widest feed, are not computed for nothing. The tokens are the
# same either way; only the number and size of the forwards change. (The names live in config.)


@dataclass(frozen=True)
class ForwardCost:
    """The cost of a forward, in units of one fed position's compute: ``fixed`` per forward
    (reading the weights, launching the layers), ``row`` per row it computes (attending to the
    row's cache, its share of the head), ``multi`` more per row when rows are fed more than one
    token (attention then runs its many-query path), and one per position, padding included."""

    fixed: float
    row: float = 0.0
    multi: float = 0.0

    def forward(self, rows: int, width: int) -> float:
        """One forward over ``rows`` rows padded to ``width`` tokens, in fed positions."""
        return self.fixed + rows * (self.row + (self.multi if width > 1 else 0.0) + width)


# Fitted (least squares on relative error, 10 % mean error) to bench/results/attention/ (SmolLM2
# fp32, 2-core AMD EPYC, 2 threads, 1 / 16 / 64 rows x 1-16 tokens over 100-400 cached positions,
# after ``attention`` dropped the key copy): ~71 ms per forward + 1.09 ms per row (1.90 when fed
# several tokens) + 1.65 ms per position; e.g. 64 rows over 300 cached positions: 244 ms for 1
# token a row, 409 for 2. The cache length (100-400) made no difference the noise did not hide.
CPU_FORWARD_COST = ForwardCost(fixed=43.0, row=0.66, multi=0.49)
# A GPU forward stays bound by reading the weights up to about the roofline's ridge point: on an
# H200, ~790 TFLOP/s of bf16 matrix work over 4.8 TB/s is ~165 FLOP per byte, i.e. ~165 positions
# per forward for 2-byte weights at 2 FLOP per weight and position (not yet measured end to end);
# the per-row terms are not measured either (0).
GPU_FORWARD_COST = ForwardCost(fixed=160.0)

# Decay of a row's acceptance counts at each forward it drafts in: the estimate follows the row's
# recent text (a copied stretch, then free text) within a few forwards.
ACCEPT_DECAY = 0.8


def forward_cost_of(device) -> ForwardCost:
    """The ``ForwardCost`` of ``device`` (``CPU_FORWARD_COST``, ``GPU_FORWARD_COST``)."""
    return GPU_FORWARD_COST if torch.device(device).type == "cuda" else CPU_FORWARD_COST


def best_width(drafting: Sequence[tuple[int, float]], *, producing: int, cost: Callable[[int], float]) -> int:
    """The feed width ``w`` (a drafting row's last token plus up to ``w - 1`` drafts) of the next
    forward that maximises expected tokens per unit of cost.

    ``drafting``: ``(m, q)`` per drafting row: ``m`` drafts proposed, ``q`` the chance that each
    next draft is accepted (so the first ``i`` all are with chance ``q ** i``). ``producing``: rows
    that get a token from this step whatever ``w`` is (every fed row). ``cost(w)``: what the step
    costs when the drafting rows feed at most ``w`` tokens (``Decoder.step_cost``: a padded block
    makes narrower drafts than its widest feed free; a decoder that runs wide feeds apart does
    not). Ties keep the narrower width.
    """
    top = max([1] + [1 + m for m, _ in drafting])
    best_w, best_rate = 1, -1.0
    for w in range(1, top + 1):
        value = float(producing)
        for m, q in drafting:
            p = 1.0
            for _ in range(min(m, w - 1)):
                p *= q
                value += p
        c = cost(w)
        if not c > 0:
            raise ValueError(f"best_width: cost({w}) = {c}; expected > 0")
        rate = value / c
        if rate > best_rate * (1.0 + 1e-9):
            best_w, best_rate = w, rate
    return best_w


class DraftPool:
    """An n-gram index over a problem's documents: ``gram -> (document, start of what followed)``.

    Each n-gram (1 <= n <= ``max_n``) maps to its latest occurrence that a token followed; a
    later document counts as later. Adding a document of length m costs O(m * max_n).
    """

    def __init__(self, documents: Iterable[Sequence[int]] = (), *, max_n: int = MAX_NGRAM):
        check_int("max_n", max_n)
        self.max_n = max_n
        self.documents: list[list[int]] = []
        self._latest: dict[tuple[int, ...], tuple[int, int]] = {}
        for doc in documents:
            self.add(doc)

    def add(self, tokens: Sequence[int]) -> None:
        """Add a document (e.g. an answer of the problem); it is later than every earlier one."""
        doc = [int(t) for t in tokens]
        d = len(self.documents)
        self.documents.append(doc)
        latest, max_n = self._latest, self.max_n
        for i in range(1, len(doc)):
            for n in range(1, min(max_n, i) + 1):
                latest[tuple(doc[i - n : i])] = (d, i)

    def lookup(self, gram: tuple[int, ...], k: int) -> list[int] | None:
        """Up to ``k`` tokens that followed the latest occurrence of ``gram``, or None."""
        hit = self._latest.get(gram)
        if hit is None:
            return None
        d, i = hit
        return self.documents[d][i : i + k]

    def row(
        self, context: Sequence[int] = (), *, k: int = 8, index_context: bool = False, policy: str = "full"
    ) -> DraftRow:
        """A ``DraftRow`` drafting from this pool; see ``DraftRow``."""
        return DraftRow(self, context, k=k, index_context=index_context, policy=policy)

    def propose(self, context: Sequence[int], k: int) -> list[int]:
        """Drafts for a row whose whole ``context`` is its own text (no back-off state kept)."""
        return DraftRow(self, context, k=k, index_context=True).propose(k)


class DraftRow:
    """One decoding row: its tokens, its own n-gram index, drafting and back-off.

    ``context`` is what the row starts from (e.g. the prompt, the answer prefix and the re-decoded
    tokens). Its own text, indexed as it grows with ``extend``, is what the row appends, plus the
    context itself when ``index_context`` (for a row whose context is not in the pool). Matches in
    the row's own text come first (they are the latest), then the pool's. ``k`` is the most tokens
    a ``propose()`` drafts; 0 turns drafting off. ``policy`` (``DRAFT_POLICIES``): how many of them
    a forward feeds (``rows.advance``).
    """

    def __init__(
        self,
        pool: DraftPool | None,
        context: Sequence[int] = (),
        *,
        k: int = 8,
        index_context: bool = False,
        policy: str = "full",
    ):
        check_int("k", k, low=0, note="0 turns drafting off")
        self.pool = pool
        self.k = k
        self.policy = check_choice("draft_policy", policy, DRAFT_POLICIES)
        self.max_n = pool.max_n if pool is not None else MAX_NGRAM
        self.tokens: list[int] = []
        self._own: dict[tuple[int, ...], int] = {}
        self._own_from = 0 if index_context else len(context)
        self.misses = 0  # consecutive drafts rejected outright
        self.paused = 0  # forwards left without drafting
        self.proposed = 0  # drafts handed out (counts of tokens), for statistics
        self.accepted = 0
        self._recent_acc = 0.0  # decayed counts behind ``acceptance``
        self._recent_rej = 0.0
        self.extend(context)

    def extend(self, tokens: Iterable[int]) -> None:
        """Append tokens the row has committed to (its context grows)."""
        toks, own, max_n, start = self.tokens, self._own, self.max_n, self._own_from
        for t in tokens:
            i = len(toks)
            if i >= start:
                for n in range(1, min(max_n, i) + 1):
                    own[tuple(toks[i - n : i])] = i
            toks.append(int(t))

    def match(self, k: int) -> list[int]:
        """Up to ``k`` tokens following the latest occurrence of the longest n-gram ending the row.

        A match in the row's own text may run into the row's end: the copy then continues with
        the tokens it has just drafted (a repeating loop drafts its own continuation).
        """
        toks = self.tokens
        if k <= 0 or not toks:
            return []
        for n in range(min(self.max_n, len(toks)), 0, -1):
            gram = tuple(toks[-n:])
            i = self._own.get(gram)
            if i is not None:
                end = len(toks)
                out: list[int] = []
                for j in range(k):
                    p = i + j
                    out.append(toks[p] if p < end else out[p - end])
                return out
            if self.pool is not None:
                got = self.pool.lookup(gram, k)
                if got is not None:
                    return got
        return []

    def propose(self, limit: int | None = None) -> list[int]:
        """Drafts for the next forward: at most ``min(k, limit)`` tokens, none while backing off."""
        k = self.k if limit is None else min(self.k, limit)
        if k <= 0:
            return []
        if self.paused > 0:
            self.paused -= 1
            return []
        return self.match(k)

    @property
    def acceptance(self) -> float:
        """The chance that the next draft is accepted given that the ones before it were: accepted
        drafts over accepted drafts plus rejections (each fed draft run ends in at most one),
        recent forwards weighted most (``ACCEPT_DECAY``), with one of each as a prior (0.5 at first)."""
        return (self._recent_acc + 1.0) / (self._recent_acc + self._recent_rej + 2.0)

    def observe(self, proposed: int, accepted: int) -> None:
        """Record how many of ``proposed`` drafts greedy decoding ``accepted``; backs off on misses."""
        if proposed <= 0:
            return
        self.proposed += proposed
        self.accepted += accepted
        self._recent_acc = ACCEPT_DECAY * self._recent_acc + accepted
        self._recent_rej = ACCEPT_DECAY * self._recent_rej + (accepted < proposed)
        if accepted > 0:
            self.misses = 0
            return
        self.misses += 1
        self.paused = min(BACKOFF_FIRST << (self.misses - 1), BACKOFF_MAX)
