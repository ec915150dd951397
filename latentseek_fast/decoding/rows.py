"""Greedy decoding of rows with drafts: the one decode step (``advance``) and the one acceptance
rule (``accept``); plain greedy decoding is the special case of no drafts.

A ``Row`` is one token stream on a decoder row. Each ``advance`` runs one ``Decoder.step`` over
every row that has something to feed: a row's first feed is its prompt (or prefix), every later
one its last token plus the drafts its ``DraftRow`` proposes (none: one token per forward). The
greedy choice at every fed position of every row comes from one head call and one host sync
(which the stop test needs anyway). A row keeps the longest prefix of its drafts that greedy
agrees with plus greedy's own next token, stops exactly where plain greedy decoding stops (a
stop token, included, or its cap), and rolls its rejected positions back, so afterwards its
cache holds every position before its last token, as after plain decoding, and its tokens are
those of plain decoding (the latents differ only by the blocking of a many-token forward).

Every decision also records its top-2 logit gap (``Row.gaps``: the chosen logit minus the
runner-up, after the final softcap if the model has one), the near-tie audit's raw material
(``audit``): a decision whose gap is within rounding noise can flip under another thread
count, batch blocking or GPU. It costs one ``topk(2)`` over the step's logits beside the argmax,
read back in the same host sync.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from .._util import check_choice, check_int
from ..config import DRAFT_POLICIES
from ..ops.lpg_reference import top2_gap
from .decoder import Decoder
from .drafts import DraftRow, best_width


@dataclass
class DecodeStats:
    """Counts over decoding: tokens produced, forwards run, drafts fed and accepted.

    ``forwards`` counts the decoder's forwards after the one that yields the first token (the
    prefill), so plain greedy decoding of n tokens takes n - 1 forwards. ``reused``: iterations
    that reused an earlier iteration's continuation instead of decoding it (``SeekConfig.reuse``).
    """

    tokens: int = 0
    forwards: int = 0
    drafted: int = 0
    accepted: int = 0
    reused: int = 0

    def add(self, other) -> None:
        """Add another ``DecodeStats``, or the ``stats`` of a ``Row`` or a ``greedy.Generation``."""
        s = other if isinstance(other, DecodeStats) else other.stats
        self.tokens += s.tokens
        self.forwards += s.forwards
        self.drafted += s.drafted
        self.accepted += s.accepted
        self.reused += s.reused

    def to_dict(self) -> dict:
        return asdict(self)


def accept(greedy: Sequence[int], drafts: Sequence[int]) -> int:
    """How many of ``drafts`` greedy decoding keeps: the length of their longest prefix that
    ``greedy`` (greedy's choice after each fed position) agrees with."""
    a, m = 0, min(len(drafts), len(greedy))
    while a < m and greedy[a] == drafts[a]:
        a += 1
    return a


class Row:
    """One token stream on decoder row ``slot``: greedy tokens after ``feed`` until a stop id or
    ``cap`` tokens.

    - ``feed``: the tokens to feed next: first a prompt or prefix, then ``[last token]`` (plus the
      drafts of the current step while it runs; ``m`` of them);
    - ``ids``: the tokens produced; ``gaps``: the top-2 logit gap of the decision that chose each
      one (``ops.lpg_reference.top2_gap``); ``latents``: with ``keep_latents``, ``[n, d]``
      tensors whose rows are the latent that produced each token (``latent_tensor`` joins them);
    - ``stats``: this row's ``DecodeStats``; ``secs``: wall seconds of the steps it took part in,
      split over their rows by tokens fed;
    - ``done``/``stopped_by``: finished, by ``"stop"`` (a stop token, included in ``ids``) or
      ``"length"`` (``cap`` tokens);
    - ``fork``: None, or ``(source Row, length)``: the row waits for ``source``'s first feed,
      then its cache becomes the first ``length`` positions of ``source``'s (``Decoder.fork``)
      and ``feed`` (the rest of its prompt) is fed;
    - ``drafts``: the ``DraftRow`` that proposes drafts (None: one token per forward), whose
      tokens end where the row's fed tokens do; ``on_token(id)`` is called with each token as
      soon as it is chosen; ``tag`` is the caller's.
    """

    __slots__ = (
        "slot", "feed", "ids", "gaps", "latents", "stop", "cap", "keep_latents", "drafts", "on_token", "tag",
        "stats", "done", "stopped_by", "fork", "secs", "m",
    )  # fmt: skip

    def __init__(
        self,
        slot: int,
        feed: Sequence[int],
        *,
        stop: frozenset[int],
        cap: int,
        keep_latents: bool,
        drafts: DraftRow | None = None,
        on_token: Callable[[int], None] | None = None,
        tag=None,
    ):
        check_int("cap", cap)
        self.feed = [int(t) for t in feed]
        if not self.feed:
            raise ValueError(f"Row(slot={slot}): feed is empty; a row starts from at least one token")
        self.slot, self.cap, self.keep_latents = slot, cap, bool(keep_latents)
        self.stop = stop if isinstance(stop, frozenset) else frozenset(stop)
        self.drafts, self.on_token, self.tag = drafts, on_token, tag
        self.ids: list[int] = []
        self.gaps: list[float] = []
        self.latents: list[torch.Tensor] = []
        self.stats = DecodeStats()
        self.done = False
        self.stopped_by: str | None = None
        self.fork: tuple[Row, int] | None = None
        self.secs = 0.0
        self.m = 0

    def latent_tensor(self, width: int, device) -> torch.Tensor:
        """The latents ``[len(ids), width]`` (an empty ``[0, width]`` when none were kept)."""
        return torch.cat(self.latents) if self.latents else torch.empty(0, width, device=device)


def _propose(rows: list[Row], decoder: Decoder, policy: str, max_drafts: int | None) -> None:
    """Append each drafting row's drafts to its feed (``row.m`` of them)."""
    proposed = []
    for r in rows:  # past its first feed, a row feeds [its last token, *drafts]
        r.m = 0
        if r.drafts is not None and r.ids:
            limit = r.cap - len(r.ids) - 1
            drafts = r.drafts.propose(limit if max_drafts is None else min(limit, max_drafts))
            if drafts:
                proposed.append((r, drafts))
    if proposed and policy == "cost":
        # One width for every drafting row, priced as the decoder would run the step.
        drafting = set(id(r) for r, _ in proposed)
        others = [len(r.feed) for r in rows if id(r) not in drafting]
        spans = [(len(r.feed), len(d)) for r, d in proposed]

        def cost(w: int) -> float:
            return decoder.step_cost(others + [b + min(m, max(0, w - b)) for b, m in spans])

        chances = [(len(d), r.drafts.acceptance) for r, d in proposed]
        width = best_width(chances, producing=len(rows), cost=cost)
        proposed = [(r, d[: max(0, width - len(r.feed))]) for r, d in proposed]
    for r, drafts in proposed:
        r.m = len(drafts)
        r.feed = r.feed + drafts


def advance(
    decoder: Decoder,
    head: torch.nn.Module,
    rows: Sequence[Row],
    *,
    policy: str = "full",
    max_drafts: int | None = None,
    after_fork: Callable[[Row], None] | None = None,
    softcap: float | None = None,
) -> list[Row]:
    """One decode step of every row of ``rows`` that has a feed and no pending fork; returns the
    rows that finished in it (``done``, ``feed == []``), in order.

    ``policy`` (``DRAFT_POLICIES``): ``"full"`` feeds every proposed draft, ``"cost"`` cuts them
    to the one width ``drafts.best_width`` picks, pricing each width with the decoder's
    ``step_cost`` (how it would group and pad the step's feeds). ``max_drafts``: the most drafts
    a row feeds (None: its ``DraftRow.k``).
    Rows in ``rows`` that wait for a fork get it once their source has been fed in this step;
    ``after_fork(row)`` is then called. ``softcap``: the model's final logit softcap
    (``model.softcap_of``), for the gaps. Raises ValueError when no row can be fed.
    """
    check_choice("draft_policy", policy, DRAFT_POLICIES)
    fed = [r for r in rows if r.feed and r.fork is None]
    if not fed:
        raise ValueError("advance: no row to feed (every row is done or waits for a fork)")
    t0 = time.perf_counter()
    _propose(fed, decoder, policy, max_drafts)
    hidden = decoder.step({r.slot: r.feed for r in fed})
    sources = set(map(id, fed))
    for r in rows:  # forks whose source was just fed (before any row is dropped or rolled back)
        if r.fork is not None and id(r.fork[0]) in sources:
            decoder.fork(r.slot, r.fork[0].slot, r.fork[1])
            r.fork = None
            if after_fork is not None:
                after_fork(r)
    # states[j] of a row predicts the token after its fed position j: the last one of a first
    # feed, every one of [token, *drafts].
    states = [hidden[r.slot][-(1 + r.m) :] for r in fed]
    block = torch.cat(states) if len(states) > 1 else states[0]
    logits = head(block)
    # argmax keeps the lowest index on ties (topk's order among equals is unspecified).
    choice = torch.cat([torch.argmax(logits, dim=-1).double(), top2_gap(logits, softcap).double()])
    values = choice.tolist()  # the step's one host sync
    n = logits.shape[0]
    greedy, gaps = [int(v) for v in values[:n]], values[n:]
    spent = time.perf_counter() - t0
    total = sum(len(r.feed) for r in fed)
    finished = []
    o = 0
    for r, st in zip(fed, states):
        m = r.m
        g = greedy[o : o + 1 + m]
        gp = gaps[o : o + 1 + m]
        o += 1 + m
        r.secs += spent * len(r.feed) / total
        a = accept(g, r.feed[len(r.feed) - m :]) if m else 0
        if r.ids:  # not the first feed: forwards count after the one that yields the first token
            r.stats.forwards += 1
            r.stats.drafted += m
            r.stats.accepted += a
        if m:
            r.drafts.observe(m, a)
        emitted = 0
        for tok in g[: a + 1]:  # stop exactly where plain greedy stops
            r.ids.append(tok)
            emitted += 1
            if r.on_token is not None:
                r.on_token(tok)
            if tok in r.stop:
                r.stopped_by = "stop"
                break
            if len(r.ids) >= r.cap:
                r.stopped_by = "length"
                break
        r.gaps.extend(gp[:emitted])
        r.stats.tokens += emitted
        if r.keep_latents:
            r.latents.append(st[:emitted])
        if 1 + m > emitted:  # keep the fed positions before the last emitted token
            decoder.rollback(r.slot, decoder.length(r.slot) - (1 + m - emitted))
        if r.drafts is not None:
            r.drafts.extend(g[:emitted])
        if r.stopped_by is not None:
            r.done, r.feed = True, []
            finished.append(r)
        else:
            r.feed = [r.ids[-1]]
    return finished


def run(decoder: Decoder, head: torch.nn.Module, rows: Sequence[Row], **options) -> None:
    """``advance`` (with ``options``, its keywords) until every row of ``rows`` is done; the rows
    stay on the decoder."""
    while not all(r.done for r in rows):
        advance(decoder, head, rows, **options)
