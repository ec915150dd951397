"""Algorithm 1 for one problem, written once: a state machine that decides and never runs the model.

    generate -> score -> step -> decode -> score -> step -> ... -> done
                  ^ (verify: a ReplyReward's replies decoding)

- ``generate``: the original answer is decoding (``original_job``; the driver reports the row
  with ``original_done``). Compat starts past it, from a given answer (``from_answer``).
- ``score``: ``text_to_score`` awaits its reward; the driver calls ``score_with`` (the reward,
  or for a ``ReplyReward`` its ``generate_replies``, whose progress becomes ``VerifyProgress``
  events), or, for a ``ReplyReward`` whose replies it decodes itself, asks for
  ``reply_prompts`` (state ``verify``), reports their progress with ``verify_progress`` and
  each reply with ``replied``.
- ``step``: ``step_due`` applies the stop rules (``max_steps``, then the reward threshold) and
  finishes the problem, or says a latent step is due; the driver takes it (``latent.LatentSteps``)
  on ``latent_rows`` and reports the re-decoded tokens with ``stepped``. Re-decoded tokens seen
  before reuse that continuation (``SeekConfig.reuse``; its reward too when the reward is
  deterministic); otherwise ``stepped`` returns the continuation's ``DecodeJob`` (state
  ``decode``) and the driver reports the finished row with ``continued``.
- ``done``: ``result`` holds the ``SeekResult``.

The drivers (``sequential.py``: one problem on a plain cache; ``batched.py``: many problems on a
slot KV store) differ only in how they run decoder rows, rewards and latent steps, so the
reuse table, the stop rules, the guards' labels, the events and the result exist here only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..audit import TieAudit, audit_answer, resolve_tie_gap
from ..config import SeekConfig
from ..decoding.drafts import DraftPool, DraftRow
from ..decoding.rows import DecodeStats, Row
from ..rewards.base import Reward, check_reward_value
from ..rewards.reply import ReplyReward
from .context import continuation_cap
from .events import (
    VERIFY_PROGRESS_SECONDS,
    DecodeProgress,
    IterationDone,
    OriginalDone,
    OriginalToken,
    VerifyProgress,
    rate,
)
from .result import PhaseClock, SeekResult


class ProblemError(RuntimeError):
    """A problem's seek failed (its reward raised, a latent step failed its guard, or its
    settings do not fit its answer).

    ``index`` is the problem's position in the input; the original exception is ``__cause__``
    and ``error``.
    """

    def __init__(self, index: int, error: BaseException):
        super().__init__(f"problem {index}: {type(error).__name__}: {error}")
        self.index = index
        self.error = error


@dataclass
class DecodeJob:
    """A decoding the problem needs: a row that holds ``base`` (the driver keeps what its cache
    already holds of it and feeds the rest), then feeds ``feed`` and decodes greedily until a
    ``stop`` token or ``cap`` tokens."""

    base: list[int]
    feed: list[int]
    stop: frozenset[int]
    cap: int
    keep_latents: bool
    drafts: DraftRow | None
    on_token: Callable[[int], None] | None


def start_row(decoder, slot: int, job: DecodeJob) -> Row:
    """A ``Row`` for ``job`` on ``slot``: the slot's cache, which always holds a prefix of the
    problem's current sequence, is rolled back to at most ``len(job.base)`` positions and the rest
    of the base is fed before ``job.feed``."""
    keep = min(decoder.length(slot), len(job.base))
    decoder.rollback(slot, keep)
    return Row(
        slot,
        job.base[keep:] + job.feed,
        stop=job.stop,
        cap=job.cap,
        keep_latents=job.keep_latents,
        drafts=job.drafts,
        on_token=job.on_token,
    )


def take_latent_steps(steps, problems: list[ProblemSeek]) -> list[tuple[list[int], list[float]]]:
    """The due latent step of every one of ``problems`` in one ``latent.LatentSteps.step`` call
    (each problem's latent state opened on first use); the time is shared by their latent rows.
    Returns each problem's ``(re-decoded tokens, their top-2 logit gaps)``; a failing step raises
    ``latent.StepError``."""
    t0 = time.perf_counter()
    for p in problems:
        if p.latent is None:
            p.latent = steps.open(p.latent_rows)
    stepped = steps.step(
        [p.latent for p in problems],
        [p.history[-1] for p in problems],
        [p.steps for p in problems],
        [p.label for p in problems],
        [p.need_next for p in problems],
    )
    PhaseClock.share([(p.clock, "latent", p.L) for p in problems], time.perf_counter() - t0)
    return stepped


class ProblemSeek:
    """The seek of one problem (see the module docstring).

    ``reward``: a validated ``Reward`` (``rewards.as_reward``). ``label`` names the problem in
    guard errors (``seek step K of LABEL``). ``answer_stop``/``cont_stop`` and ``cont_cap``: the
    stop tokens of the original answer and of the continuations and the continuations' cap
    (``seek``: the same stop set and ``max_new_tokens``; ``compat``: the research code's).
    ``answer_cap``: the original answer's token cap (``context.original_cap``; default
    ``max_new_tokens``); ``context``: the model's context in positions, which continuations
    never pass (``context.continuation_cap``; None: no cap, as in ``compat``).
    ``emit``: called with the progress events of ``events.py``, or None. ``tie_gap``: the
    near-tie audit's threshold (``audit.resolve_tie_gap``; default: the config's, else fp32's).
    """

    progress_every = VERIFY_PROGRESS_SECONDS  # the most often VerifyProgress comes between replies

    def __init__(
        self,
        index: int,
        question: str,
        prompt_ids: list[int],
        reward: Reward,
        config: SeekConfig,
        tokenizer,
        *,
        backend: str,
        label: str,
        answer_stop: frozenset[int],
        cont_stop: frozenset[int] | None = None,
        cont_cap: int | None = None,
        answer_cap: int | None = None,
        context: int | None = None,
        emit: Callable | None = None,
        tie_gap: float | None = None,
    ):
        self.index, self.question, self.prompt_ids = index, question, list(prompt_ids)
        self.reward, self.config, self.tokenizer = reward, config, tokenizer
        self.backend, self.label, self.emit = backend, label, emit
        self.answer_stop = answer_stop
        self.cont_stop = answer_stop if cont_stop is None else cont_stop
        self.cont_cap = config.max_new_tokens if cont_cap is None else cont_cap
        self.answer_cap = config.max_new_tokens if answer_cap is None else answer_cap
        self.context = context
        self.tie_gap = resolve_tie_gap(config.tie_gap, torch.float32) if tie_gap is None else tie_gap
        self.reuse_reward = getattr(reward, "deterministic", False) is True
        self.clock = PhaseClock()
        self.stats = DecodeStats()
        self.pool = DraftPool([self.prompt_ids]) if config.draft_tokens else None
        self.state = "generate"
        self.history: list[float] = []
        self.texts: list[str] = []  # the text each reward in ``history`` scored
        self.gen_ids: list[int] = []
        self.gen_gaps: list[float | None] = []  # the original answer's decisions' top-2 gaps
        self.gen_latents: torch.Tensor | None = None
        self.T = 0  # original answer tokens, i.e. latents (compat's ids may lack the stop token)
        self.original_text = ""
        self.answer_complete = False
        self.L = 0
        self.prefix: list[int] = []
        self.latent = None  # the driver's latent-step state (``LatentSteps.open``)
        self.steps = 0
        self.new_tokens: list[int] = []
        self.new_gaps: list[float | None] = []  # the re-decoded tokens' top-2 gaps
        self.ids: list[int] | None = None  # the latest answer (None: the original stands)
        self.text: str | None = None
        self.text_to_score = ""
        self.ids_to_score: list[int] = []  # its tokens, and their decisions' gaps (the audit's input)
        self.gaps_to_score: list[float | None] = []
        self.tail_gaps: list[float | None] = []  # the gaps of the continuation being scored
        self.reply_gaps: dict[str, list[float]] = {}  # name -> gaps of a verifier reply of it
        self.audits: list[TieAudit] = []  # one per reward in ``history``
        # re-decoded tokens -> (answer ids, text, reward, the continuation's gaps)
        self.seen: dict[tuple[int, ...], tuple[list[int], str, float, list[float | None]]] = {}
        self.pending_key: tuple[int, ...] | None = None  # re-decoded tokens being decoded/scored
        self.decode_secs = 0.0
        self.decode_tokens = 0
        self.replies: dict[str, str] = {}
        self.prompts: dict[str, str] = {}
        self.progress_sent = (-1, 0.0)  # (replies done, perf_counter) of the last VerifyProgress
        self.result: SeekResult | None = None

    # -- the original answer -----------------------------------------------------------------
    def original_job(self) -> DecodeJob:
        cfg = self.config
        drafts = None
        if self.pool is not None:
            drafts = self.pool.row(self.prompt_ids, k=cfg.draft_tokens, policy=cfg.draft_policy)
        on_token = None
        if self.emit is not None:
            tok = self.tokenizer
            on_token = lambda t: self.emit(OriginalToken(self.index, t, tok.decode([t])))  # noqa: E731
        return DecodeJob([], self.prompt_ids, self.answer_stop, self.answer_cap, True, drafts, on_token)

    def original_done(self, row: Row, width: int, device) -> None:
        """The original answer's row finished (its time is in ``row.secs``)."""
        t0 = time.perf_counter()
        self.stats.add(row.stats)
        self.gen_ids = list(row.ids)
        self.gen_gaps = list(row.gaps)
        self.gen_latents = row.latent_tensor(width, device)
        self.T = len(self.gen_ids)
        self.answer_complete = row.stopped_by == "stop" and self.cont_stop == self.answer_stop
        if self.pool is not None:
            self.pool.add(self.gen_ids)
        self.original_text = self.tokenizer.decode(self.gen_ids)
        self._to_score(self.original_text, self.gen_ids, self.gen_gaps)
        self.clock.charge("generate", row.secs + time.perf_counter() - t0)
        self.state = "score"

    def from_answer(
        self, ids: list[int], latents: torch.Tensor, text: str, r0: float, gaps: list[float] | None = None
    ) -> None:
        """Start from a given original answer, already scored ``r0`` (compat): ``latents[t]``
        produced token t (one per generated token, the stop token's included, which ``ids``, the
        research code's ``input_ids`` tail, may lack); ``gaps[t]``: the top-2 gap of that
        decision (None: unknown)."""
        self.gen_ids, self.gen_latents, self.original_text = list(ids), latents, text
        self.T = int(latents.shape[0])
        self.gen_gaps = list(gaps[: len(ids)]) if gaps is not None else [None] * len(ids)
        self._to_score(text, self.gen_ids, self.gen_gaps)
        if self.pool is not None:
            self.pool.add(self.gen_ids)
        self.scored(r0)

    # -- rewards -----------------------------------------------------------------------------
    def _to_score(self, text: str, ids: list[int], gaps: list[float | None]) -> None:
        self.text_to_score, self.ids_to_score, self.gaps_to_score = text, ids, gaps
        self.reply_gaps = {}

    def scored(self, r: float) -> None:
        """``text_to_score`` got reward ``r``: record it, and its near-tie audit, and move on (to
        ``step`` or ``done``)."""
        self.history.append(r)
        self.texts.append(self.text_to_score)
        replies = [self.reply_gaps[n] for n in self.prompts if n in self.reply_gaps]
        self.audits.append(
            audit_answer(self.ids_to_score, self.gaps_to_score, self.tie_gap, self.tokenizer.decode, replies)
        )
        self.reply_gaps = {}
        if self.pending_key is not None:
            self.seen[self.pending_key] = (self.ids, self.text, r, self.tail_gaps)
            self.pending_key = None
        if len(self.history) > 1:
            n, secs = len(self.history) - 1, self.decode_secs
            self._emit(IterationDone(self.index, n, r, len(self.ids), secs, rate(self.decode_tokens, secs),
                                     self.decode_tokens))  # fmt: skip
            self.state = "step"
            return
        T = self.T
        secs = self.clock.seconds["generate"]
        self._emit(OriginalDone(self.index, self.original_text, T, r, secs, rate(T, secs)))
        self.L = self.config.update_length(T)
        if self.L <= 0:
            self.finish("no_update")
            return
        start = self.config.start_index
        if start >= T:
            raise ValueError(f"start_index={start}: must be below the answer length T={T}")
        self.L = min(self.L, T - start)  # what is optimised: only the latents after start exist
        P = len(self.prompt_ids)
        self.cont_cap = continuation_cap(P, start, self.L, self.cont_cap, self.context, self.label)
        # An original answer ended by a stop token is the greedy continuation of its own
        # re-decoded tokens.
        if self.answer_complete and T - start - self.L <= self.cont_cap:
            self.seen[tuple(self.gen_ids[start : start + self.L])] = (
                list(self.gen_ids),
                self.original_text,
                r,
                self.gen_gaps[start + self.L :],
            )
        self.prefix = list(self.gen_ids[:start])
        self.state = "step"

    def score_with(self, reward_fn=None) -> float:
        """Call the reward on ``text_to_score`` (validated), charge the time and record it.

        A ``ReplyReward`` is scored as its ``compute`` would (``rewards.reply``), its replies
        decoded by its ``generate_replies`` with their progress sent as ``VerifyProgress``."""
        t0 = time.perf_counter()
        if reward_fn is None and isinstance(self.reward, ReplyReward):
            r = self._reward_from_own_replies(t0)
        else:
            r = (reward_fn or self.reward)(self.question, self.text_to_score)
        self.clock.charge("reward", time.perf_counter() - t0)
        self.scored(r)
        return r

    def _reward_from_own_replies(self, t0: float) -> float:
        prompts = self.reply_prompts()
        progress = None
        if self.emit is not None:
            progress = lambda done, tokens: self.verify_progress(done, tokens, time.perf_counter() - t0)  # noqa: E731
        gaps: list[list[float]] = []
        replies = self.reward.generate_replies(list(prompts.values()), on_progress=progress, gaps=gaps)
        if len(replies) != len(prompts):
            raise RuntimeError(f"expected {len(prompts)} replies, got {len(replies)}")
        if len(gaps) == len(prompts):  # a subclass's own generate_replies may not record them
            self.reply_gaps = dict(zip(prompts, gaps))
        r = self.reward.reward_from_replies(self.question, self.text_to_score, dict(zip(prompts, replies)))
        return check_reward_value(r, self.reward)

    def reply_prompts(self) -> dict[str, str]:
        """For a ``rewards.ReplyReward``: the prompts to reply to (state ``verify``); sends the
        first ``VerifyProgress`` (no reply done yet)."""
        self.prompts = self.reward.reply_prompts(self.question, self.text_to_score)
        self.replies = {}
        self.state = "verify"
        self.progress_sent = (-1, 0.0)
        self.verify_progress(0, 0, 0.0)
        return self.prompts

    def verify_progress(self, done: int, tokens: int, seconds: float) -> None:
        """The replies are decoding: ``done`` of them finished, ``tokens`` produced in ``seconds``.
        Sends ``VerifyProgress`` when ``done`` changed, or ``progress_every`` seconds after the
        last one, so that drivers may report after every decode step."""
        if self.emit is None:
            return
        now = time.perf_counter()
        if done == self.progress_sent[0] and now - self.progress_sent[1] < self.progress_every:
            return
        self.progress_sent = (done, now)
        self.emit(VerifyProgress(self.index, len(self.history), done, len(self.prompts), tokens, seconds,
                                 rate(tokens, seconds)))  # fmt: skip

    def replied(self, name: str, text: str, gaps: list[float] | None = None) -> None:
        """One reply is in (``gaps``: its decisions' top-2 gaps, for the audit); with the last one,
        the reward is read and recorded."""
        self.replies[name] = text
        if gaps is not None:
            self.reply_gaps[name] = list(gaps)
        if len(self.replies) == len(self.prompts):
            replies = {n: self.replies[n] for n in self.prompts}
            r = self.reward.reward_from_replies(self.question, self.text_to_score, replies)
            self.scored(check_reward_value(r, self.reward))

    # -- latent steps ------------------------------------------------------------------------
    def step_due(self) -> bool:
        """In state ``step``: finish on ``max_steps`` or the threshold, else a step is due."""
        if self.steps >= self.config.max_steps:
            self.finish("max_steps")
        elif self.history[-1] > self.config.reward_threshold:
            self.finish("threshold")
        return self.state == "step"

    @property
    def latent_rows(self) -> torch.Tensor:
        """The L latents the seek optimises (what ``LatentSteps.open`` takes)."""
        start = self.config.start_index
        return self.gen_latents[start : start + self.L]

    @property
    def need_next(self) -> bool:
        """Whether the step being taken is followed by another (the fused pass then also
        computes the next gradient direction)."""
        return self.steps + 1 < self.config.max_steps

    def stepped(self, tokens: list[int], gaps: list[float] | None = None) -> DecodeJob | None:
        """The latent step re-decoded ``tokens`` (``gaps``: their top-2 gaps): reuse an earlier
        outcome, or decode."""
        cfg = self.config
        self.steps += 1
        self.new_tokens = list(tokens)
        self.new_gaps = list(gaps) if gaps is not None else [None] * len(self.new_tokens)
        self.decode_secs, self.decode_tokens = 0.0, 0
        key = tuple(self.new_tokens)
        if cfg.reuse and key in self.seen:  # the same input: greedy gives the same continuation
            self.ids, self.text, earlier, tail = self.seen[key]
            self._to_score(self.text, self.ids, self._prefix_gaps() + self.new_gaps + tail)
            self.stats.reused += 1
            if self.reuse_reward:
                self.scored(earlier)
            else:
                self.state = "score"
            return None
        self.pending_key = key if cfg.reuse else None
        base = self.prompt_ids + self.prefix
        drafts = None
        if self.pool is not None:
            drafts = self.pool.row(base + self.new_tokens, k=cfg.draft_tokens, policy=cfg.draft_policy)
        self.state = "decode"
        on_token = None if self.emit is None else self._decode_progress()
        return DecodeJob(base, self.new_tokens, self.cont_stop, self.cont_cap, False, drafts, on_token)

    def _decode_progress(self) -> Callable[[int], None]:
        """The continuation's ``on_token``: a ``DecodeProgress`` every ``progress_every`` seconds."""
        t0 = time.perf_counter()
        state = [0, t0]  # tokens, time of the last event

        def on_token(_):
            state[0] += 1
            now = time.perf_counter()
            if now - state[1] >= self.progress_every:
                state[1] = now
                secs = now - t0
                self.emit(DecodeProgress(self.index, self.steps, state[0], secs, rate(state[0], secs)))

        return on_token

    def continued(self, row: Row) -> None:
        """The continuation's row finished (its time is in ``row.secs``)."""
        t0 = time.perf_counter()
        self.stats.add(row.stats)
        self.ids = self.prefix + self.new_tokens + list(row.ids)
        self.text = self.tokenizer.decode(self.ids)
        self.tail_gaps = list(row.gaps)
        self._to_score(self.text, self.ids, self._prefix_gaps() + self.new_gaps + self.tail_gaps)
        if self.pool is not None:
            self.pool.add(self.ids)
        self.decode_tokens = len(self.new_tokens) + len(row.ids)
        self.decode_secs = row.secs + time.perf_counter() - t0
        self.clock.charge("decode", self.decode_secs)
        self.state = "score"

    def _prefix_gaps(self) -> list[float | None]:
        """The gaps of the answer's fixed prefix (the original's tokens before ``start_index``)."""
        return self.gen_gaps[: len(self.prefix)]

    # -- the end -----------------------------------------------------------------------------
    def finish(self, stopped: str) -> None:
        ids, text = (self.ids, self.text) if self.ids is not None else (self.gen_ids, self.original_text)
        self.result = SeekResult(
            answer=text,
            answer_ids=list(ids),
            original_answer=self.original_text,
            original_ids=list(self.gen_ids),
            rewards=list(self.history),
            original_length=len(self.gen_ids),
            update_length=self.L,
            final_length=len(ids),
            iterations=len(self.history) - 1,
            stopped=stopped,
            backend=self.backend,
            timings=dict(self.clock.seconds),
            reused=self.stats.reused,
            decode_stats=self.stats.to_dict(),
            texts=list(self.texts),
            audit=list(self.audits),
            tie_gap=self.tie_gap,
        )
        self.state = "done"

    def _emit(self, event) -> None:
        if self.emit is not None:
            self.emit(event)
