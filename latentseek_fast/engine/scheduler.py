"""``seek_many``/``iter_seek``: many seeks in flight, their decoding batched (continuous batching).

Each problem runs a small state machine, Algorithm 1 exactly as ``loop.seek`` runs it
(docs/algorithm.md):

    generate original -> score -> [threshold / max_steps test] -> latent step -> continue
                                     ^------------------- score <-----------------'

The scheduler keeps up to ``batch_size`` problems in flight and repeats one round:

1. admit queued problems into free slots (a finished problem's slot takes the next one);
2. without running the model: score every answer that is due (all due rewards together; the
   self-reward's four verifier prompts of every due problem become decoder rows), apply the
   threshold/max_steps tests, and take the latent step of every problem that is due in one
   batched call (``latent.FusedBatch``; the ``reference`` backend loops per problem, it is the
   oracle);
3. one decoder step over every row that is decoding (original answers, continuations,
   verifier replies), ragged feeds included: one forward (two when long feeds such as an
   admitted prompt run apart, see ``HFDecoder.step``); one argmax over all fed positions.

Drafts (``SeekConfig.draft_tokens``, see ``drafts.py``): before the forward each row past its
prefill feeds [its last token, *up to K drafts] from its ``DraftRow``; after it the row keeps the
longest prefix greedy agrees with plus greedy's own token, stops exactly where plain greedy stops,
and rolls its rejected positions back (``Decoder.rollback``). Solver rows draft from the
problem's ``DraftPool`` (prompt, original answer, earlier continuations: those of ``seek``), so
their tokens, forwards and accepted drafts are ``seek``'s; verifier rows draft from their own
prompt, which quotes the solution. Exact reuse (``SeekConfig.reuse``) is ``loop.seek_loop``'s: re-
decoded tokens seen before take that continuation (and its reward when the reward is
deterministic) without a row.

Wall time of a shared operation is split over the problems it served, in proportion to their
work (tokens fed, latent rows), so a problem's ``timings`` sum with the others' to the wall
time spent, phase by phase.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence

import torch

from .. import decode
from .._util import check_int
from ..backends import resolve_backend
from ..config import SeekConfig
from ..drafts import DecodeStats, DraftPool, DraftRow, best_width, forward_positions
from ..loop import (
    SeekResult,
    check_finite,
    check_on_event,
    check_step_reward,
    checked_step,
    context_limit,
    continuation_cap,
    finite_flags,
    original_cap,
    overflow_error,
    problem_parts,
    step_where,
)
from ..rewards import make_reward
from ..rewards.base import as_reward, check_reward_value
from ..steppers import make_stepper
from .decoder import HFDecoder
from .events import IterationDone, OriginalDone, OriginalToken, ProblemDone, rate
from .latent import FusedBatch, FusedLatents

PHASES = ("generate", "latent", "decode", "reward")


class ProblemError(RuntimeError):
    """A problem's seek failed (its reward raised, or its settings do not fit its answer).

    ``index`` is the problem's position in the input; the original exception is ``__cause__``
    and ``error``.
    """

    def __init__(self, index: int, error: BaseException):
        super().__init__(f"problem {index}: {type(error).__name__}: {error}")
        self.index = index
        self.error = error


# Shortest common prompt prefix worth a fork (a copy of its cached columns instead of a prefill).
MIN_SHARED_PREFIX = 16


def _common_prefix(seqs: list[list[int]]) -> int:
    """Length of the longest common prefix of ``seqs``."""
    n = min(map(len, seqs), default=0)
    for i in range(n):
        if any(s[i] != seqs[0][i] for s in seqs):
            return i
    return n


def _verifier_stop_ids(tokenizer, model) -> frozenset[int]:
    """The stop set the batched verifiers use (``greedy_generate_batch``)."""
    from ..decode_batch import stop_token_ids

    return frozenset(stop_token_ids(tokenizer, model))


class _Row:
    """One decoding stream on a decoder row: feed -> greedy tokens until a stop id or a cap."""

    __slots__ = (
        "row", "feed", "ids", "lats", "stop", "cap", "keep", "phase", "owner", "kind", "tag", "secs",
        "draft", "m", "stats", "fork",
    )  # fmt: skip

    def __init__(self, row, feed, *, stop, cap, keep, phase, owner, kind, tag=None, draft=None):
        self.row, self.feed, self.ids, self.lats = row, list(feed), [], []
        self.stop, self.cap, self.keep, self.phase = stop, cap, keep, phase
        self.owner, self.kind, self.tag, self.secs = owner, kind, tag, 0.0
        self.draft: DraftRow | None = draft  # None: one token per forward
        self.m = 0  # drafts in the current feed
        self.stats = DecodeStats()  # forwards after the prefill feed, drafts fed and accepted
        # (source row, length): wait for ``source``'s prefill, copy its first ``length`` cached
        # positions, then feed the rest of this row's prompt (``Decoder.fork``).
        self.fork: tuple[_Row, int] | None = None


class _Problem:
    """One seek's state (see the module docstring)."""

    def __init__(self, index: int, question: str, prompt_ids: list[int], reward, self_reward):
        self.index, self.question, self.prompt_ids = index, question, prompt_ids
        self.reward, self.self_reward = reward, self_reward
        self.clock = dict.fromkeys(PHASES, 0.0)
        self.state = "generate"  # generate | score | verify | step | decode | done
        self.solver = None  # decoder row of the solver
        self.gen_ids: list[int] = []
        self.gen_latents = None
        self.original_text = ""
        self.text_to_score = ""
        self.history: list[float] = []
        self.texts: list[str] = []  # the text each reward in history scored
        self.L = 0
        self.cont_cap = 0  # a continuation's token cap (max_new_tokens, or less near the context's end)
        self.prefix: list[int] = []
        self.base_len = 0
        self.stepper = None  # ReferenceStepper or FusedLatents
        self.steps = 0
        self.new_tokens: list[int] = []
        self.ids: list[int] | None = None
        self.text: str | None = None
        self.replies: dict[str, str] = {}
        self.verifier_prompts: dict[str, str] = {}
        self.decode_secs = 0.0
        self.decode_tokens = 0
        self.result: SeekResult | None = None
        self.stopped = ""
        self.pool: DraftPool | None = None
        self.stats = DecodeStats()
        self.seen: dict[tuple[int, ...], tuple[list[int], str, float]] = {}  # loop.seek_loop's
        self.pending_key: tuple[int, ...] | None = None  # re-decoded tokens being decoded/scored
        self.reuse_reward = False


class Engine:
    """Runs the seeks of a list of problems; ``run()`` yields ``(index, SeekResult)`` as each
    problem finishes."""

    def __init__(
        self,
        model,
        tokenizer,
        problems: Sequence,
        reward=None,
        config: SeekConfig | None = None,
        *,
        batch_size: int = 8,
        on_event: Callable | None = None,
        prompts: Sequence[str] | None = None,
        dataset: str = "gsm8k",
        style: str = "boxed",
        format_rule: bool = False,
        **overrides,
    ):
        check_int("batch_size", batch_size)
        check_on_event(on_event)
        if isinstance(problems, (str, bytes)) or not isinstance(problems, Sequence):
            raise ValueError(
                f"problems={problems!r}: expected a sequence of questions or data.Problem objects"
            )
        self.config = SeekConfig(**{**(config.to_dict() if config else {}), **overrides})
        self.model, self.tokenizer = model, tokenizer
        self.head = decode.lm_head_of(model)
        self.device = self.head.weight.device
        self.batch_size, self.on_event = batch_size, on_event
        n = len(problems)
        if prompts is not None and len(prompts) != n:
            raise ValueError(f"prompts has {len(prompts)} entries; expected one per problem ({n})")
        rewards = self._rewards(reward, n)
        self.parts = []
        for i, p in enumerate(problems):  # every question is checked before anything runs
            try:
                self.parts.append(problem_parts(p, dataset))
            except ValueError as e:
                raise ValueError(f"problems[{i}]: {e}") from None
        self.specs = []
        for i, (question, gold, ds) in enumerate(self.parts):
            try:
                obj = make_reward(
                    rewards[i], model, tokenizer, gold=gold, dataset=ds, style=style, format_rule=format_rule
                )
                fn = as_reward(obj)
            except Exception as e:
                raise ProblemError(i, e) from e
            self.specs.append((question, gold, ds, obj, fn))
        self.style = style
        # Every prompt is tokenized and checked against the model's context before anything runs.
        self.context = context_limit(model)
        self.prompt_ids: list[list[int]] = []
        self.caps: list[int] = []  # the original answer's token cap (loop.original_cap)
        self.labels: list[str] = []  # how the context checks name each problem
        for i, (question, _, ds, _, _) in enumerate(self.specs):
            if prompts is not None:
                prompt = prompts[i]
            else:
                from ..prompts import build_prompt

                prompt = build_prompt(tokenizer, question, dataset=ds, style=style)
            ids = tokenizer(prompt, return_tensors="pt").input_ids[0].tolist()
            pid = getattr(problems[i], "id", None)
            self.labels.append(f"problems[{i}]" + (f" (id {pid!r})" if pid is not None else ""))
            self.caps.append(original_cap(len(ids), self.config.max_new_tokens, self.context, self.labels[i]))
            self.prompt_ids.append(ids)
        self.backend = resolve_backend(
            self.config.backend,
            self.device,
            latent_dtype=self.config.latent_dtype,
            head_shape=tuple(self.head.weight.shape),
            max_steps=self.config.max_steps,
        )
        self.stop = decode.stop_ids(tokenizer)
        self.decoder = HFDecoder(model)
        self.fused = (
            None
            if self.backend == "reference"
            else FusedBatch(self.head, self.config, self.backend, decode.softcap_of(model))
        )
        self._verifier_stop = None
        self.rows: list[_Row] = []
        # Drafts stay in the decoder's main forward: a feed of 1 + drafts must not be a long feed.
        self.max_drafts = min(self.config.draft_tokens, self.decoder.long_feed - 1)
        self.forward_positions = forward_positions(self.device)  # draft_policy "cost"

    def _verifier_drafts(self, ids: list[int]) -> DraftRow | None:
        """A verifier row drafts from its own prompt, which quotes the solution it judges."""
        cfg = self.config
        if not cfg.draft_tokens:
            return None
        return DraftRow(None, ids, k=cfg.draft_tokens, index_context=True, policy=cfg.draft_policy)

    @staticmethod
    def _rewards(reward, n: int) -> list:
        if isinstance(reward, (list, tuple)):
            if len(reward) != n:
                raise ValueError(
                    f"reward is a sequence of {len(reward)} rewards; expected one per problem ({n})"
                )
            return list(reward)
        return [reward] * n

    # -- events and time ---------------------------------------------------------------------
    def _emit(self, event) -> None:
        if self.on_event is not None:
            self.on_event(event)

    @staticmethod
    def _share(items: list[tuple[_Problem, str, float]], since: float) -> None:
        """Split the wall time since ``since`` over ``(problem, phase, weight)`` by weight."""
        spent = time.perf_counter() - since
        total = sum(w for _, _, w in items)
        for p, phase, w in items:
            p.clock[phase] += spent * (w / total if total else 1.0 / len(items))

    # -- the run -----------------------------------------------------------------------------
    def run(self) -> Iterator[tuple[int, SeekResult]]:
        queue = deque(range(len(self.parts)))
        live: list[_Problem] = []
        while queue or live:
            while queue and len(live) < self.batch_size:
                live.append(self._admit(queue.popleft()))
            failure = None
            try:
                self._settle(live)
            except ProblemError as e:
                failure = e
            for p in [p for p in live if p.state == "done"]:
                live.remove(p)
                self.decoder.drop_row(p.solver)
                self._emit(ProblemDone(p.index, p.result))
                yield p.index, p.result
            if failure is not None:
                raise failure
            if any(p.state == "done" for p in live):
                continue
            if queue and len(live) < self.batch_size:
                continue  # admit before the next forward
            if live:
                self._decode_step()

    def _admit(self, index: int) -> _Problem:
        question, gold, ds, obj, fn = self.specs[index]
        t0 = time.perf_counter()
        prompt_ids = self.prompt_ids[index]
        self_reward = None
        from ..rewards.self_reward import SelfReward

        if (
            isinstance(obj, SelfReward)
            and obj.model is self.model
            and type(obj).compute is SelfReward.compute
            and type(obj).verifier_prompts is SelfReward.verifier_prompts
        ):
            self_reward = obj
        p = _Problem(index, question, prompt_ids, fn, self_reward)
        p.reuse_reward = getattr(fn, "deterministic", False) is True
        p.solver = self.decoder.add_row()
        draft = None
        if self.config.draft_tokens:
            p.pool = DraftPool([prompt_ids])
            draft = p.pool.row(prompt_ids, k=self.config.draft_tokens, policy=self.config.draft_policy)
        self.rows.append(
            _Row(
                p.solver,
                prompt_ids,
                stop=self.stop,
                cap=self.caps[index],
                keep=True,
                phase="generate",
                owner=p,
                kind="original",
                draft=draft,
            )
        )
        p.clock["generate"] += time.perf_counter() - t0
        return p

    # -- everything between forwards ---------------------------------------------------------
    def _settle(self, live: list[_Problem]) -> None:
        """Score what is due, run the threshold tests and the due latent steps, start the
        continuations; repeat until only decoding is left."""
        while True:
            due = [p for p in live if p.state == "score"]
            if due:
                self._score(due)
                continue
            due = [p for p in live if p.state == "step"]
            if due:
                self._latent_round(due)
                continue
            return

    def _score(self, due: list[_Problem]) -> None:
        for p in due:
            if p.self_reward is not None:
                self._start_verifiers(p)
                continue
            t0 = time.perf_counter()
            try:
                r = p.reward(p.question, p.text_to_score)
            except Exception as e:
                raise ProblemError(p.index, e) from e
            p.clock["reward"] += time.perf_counter() - t0
            self._scored(p, r)

    def _start_verifiers(self, p: _Problem) -> None:
        t0 = time.perf_counter()
        sr = p.self_reward
        try:
            p.verifier_prompts = sr.verifier_prompts(p.question, p.text_to_score)
        except Exception as e:
            raise ProblemError(p.index, e) from e
        if self._verifier_stop is None:
            self._verifier_stop = _verifier_stop_ids(self.tokenizer, self.model)
        p.replies = {}
        prompts = {}
        for name, text in p.verifier_prompts.items():
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if not ids:
                raise ProblemError(p.index, ValueError(f"verifier prompt {name!r} encodes to no tokens"))
            prompts[name] = ids
        # The prompts differ only after the quoted solution: the first prefills the common prefix
        # once and the others fork from it (each still feeds at least its last prompt token).
        shared = _common_prefix(list(prompts.values()))
        first = None
        for name, ids in prompts.items():
            share = min(shared, len(ids) - 1) if first is not None else 0
            share = share if share >= MIN_SHARED_PREFIX else 0
            row = _Row(
                self.decoder.add_row(),
                ids[share:],
                stop=self._verifier_stop,
                cap=sr.max_new_tokens,
                keep=False,
                phase="reward",
                owner=p,
                kind="verifier",
                tag=name,
                draft=self._verifier_drafts(ids),
            )
            if share:
                row.fork = (first, share)
            if first is None:
                first = row
            self.rows.append(row)
        p.state = "verify"
        p.clock["reward"] += time.perf_counter() - t0

    def _verifier_done(self, p: _Problem, row: _Row) -> None:
        from ..rewards.self_reward import parse_verdict

        t0 = time.perf_counter()
        self.decoder.drop_row(row.row)
        p.replies[row.tag] = self.tokenizer.decode(row.ids, skip_special_tokens=True)
        if len(p.replies) == len(p.verifier_prompts):
            sr = p.self_reward
            replies = {name: p.replies[name] for name in p.verifier_prompts}
            try:
                verdicts = {name: parse_verdict(reply) for name, reply in replies.items()}
                r = check_reward_value(sr.score_verdicts(verdicts, p.text_to_score), sr)
            except Exception as e:
                raise ProblemError(p.index, e) from e
            sr.last_prompts, sr.last_replies, sr.last_verdicts = dict(p.verifier_prompts), replies, verdicts
            p.clock["reward"] += time.perf_counter() - t0
            self._scored(p, r)
        else:
            p.clock["reward"] += time.perf_counter() - t0

    def _scored(self, p: _Problem, r: float) -> None:
        p.history.append(r)
        p.texts.append(p.text_to_score)
        if p.pending_key is not None:
            p.seen[p.pending_key] = (p.ids, p.text, r)
            p.pending_key = None
        if len(p.history) == 1:
            T = len(p.gen_ids)
            secs = p.clock["generate"]
            self._emit(OriginalDone(p.index, p.original_text, T, r, secs, rate(T, secs)))
            p.L = self.config.update_length(T)
            if p.L <= 0:
                self._finish(p, "no_update")
                return
            start = self.config.start_index
            if start >= T:
                raise ProblemError(
                    p.index, ValueError(f"start_index={start}: must be below the answer length T={T}")
                )
            rows = p.gen_latents[start : start + p.L]
            p.L = int(rows.shape[0])  # min(L, T - start): what is optimised (loop.seek_loop's)
            P = len(p.prompt_ids)
            p.cont_cap = continuation_cap(
                P, start, p.L, self.config.max_new_tokens, self.context, self.labels[p.index]
            )
            # An original answer ended by a stop token is the greedy continuation of its own
            # re-decoded tokens (loop.seek_loop's ``answer_complete``).
            if p.gen_ids[-1] in self.stop and T - start - p.L <= p.cont_cap:
                p.seen[tuple(p.gen_ids[start : start + p.L])] = (list(p.gen_ids), p.original_text, r)
            p.prefix = list(p.gen_ids[:start])
            p.base_len = P + start
            t0 = time.perf_counter()
            if self.fused is None:
                p.stepper = make_stepper(self.model, rows, self.config, self.backend)
            else:
                p.stepper = FusedLatents(rows, self.fused.weight)
            p.clock["latent"] += time.perf_counter() - t0
        else:
            n = len(p.history) - 1
            secs = p.decode_secs
            self._emit(
                IterationDone(p.index, n, r, len(p.ids), secs, rate(p.decode_tokens, secs), p.decode_tokens)
            )
        p.state = "step"

    def _latent_round(self, due: list[_Problem]) -> None:
        cfg = self.config
        stepping = []
        for p in due:
            if p.steps >= cfg.max_steps:
                self._finish(p, "max_steps")
            elif p.history[-1] > cfg.reward_threshold:
                self._finish(p, "threshold")
            else:
                stepping.append(p)
        if not stepping:
            return
        need_next = [p.steps + 1 < cfg.max_steps for p in stepping]
        rewards = [p.history[-1] for p in stepping]
        label = "problem {}".format
        if self.fused is None:
            tokens = []
            for p, r, nxt in zip(stepping, rewards, need_next):
                t0 = time.perf_counter()
                try:
                    tokens.append(checked_step(p.stepper, r, p.steps, label(p.index), nxt))
                except (ValueError, RuntimeError) as e:
                    if type(e) not in (ValueError, RuntimeError):
                        raise  # subclasses (out of memory, ...) keep their type, as in seek
                    raise ProblemError(p.index, e) from e
                p.clock["latent"] += time.perf_counter() - t0
        else:
            t0 = time.perf_counter()
            for p, r in zip(stepping, rewards):  # loop.checked_step's guard, batched
                try:
                    check_step_reward(r, step_where(p.steps, label(p.index)))
                except ValueError as e:
                    raise ProblemError(p.index, e) from e
            fresh = [p.stepper for p in stepping if p.stepper.grad is None]
            self.fused.init(fresh)
            states = [p.stepper for p in stepping]
            try:
                tokens = self.fused.step(states, rewards, need_next)
            except (ValueError, RuntimeError) as exc:  # e.g. the ops' checks on inf latents
                if type(exc) not in (ValueError, RuntimeError):
                    raise  # subclasses (out of memory, ...) keep their type
                self._blame(stepping, exc)
                raise
            flags = [finite_flags(s.latents, s.grad) for s in states]
            ok = torch.cat(flags).tolist()  # one sync for every problem's guard
            o = 0
            for p, r, f in zip(stepping, rewards, flags):
                try:
                    check_finite(ok[o : o + len(f)], r, step_where(p.steps, label(p.index)), cfg.lr)
                except RuntimeError as e:
                    raise ProblemError(p.index, e) from e
                o += len(f)
            self._share([(p, "latent", p.L) for p in stepping], t0)
        for p, toks in zip(stepping, tokens):
            p.steps += 1
            p.new_tokens = list(toks)
            t0 = time.perf_counter()
            p.decode_secs, p.decode_tokens = 0.0, 0
            key = tuple(p.new_tokens)
            if cfg.reuse and key in p.seen:  # the same input: greedy gives the same continuation
                p.ids, p.text, earlier = p.seen[key]
                p.text_to_score = p.text
                p.stats.reused += 1
                if p.reuse_reward:
                    self._scored(p, earlier)
                else:
                    p.state = "score"
                continue
            p.pending_key = key if cfg.reuse else None
            self.decoder.rollback(p.solver, p.base_len)
            draft = None
            if p.pool is not None:
                draft = p.pool.row(
                    p.prompt_ids + p.prefix + p.new_tokens, k=cfg.draft_tokens, policy=cfg.draft_policy
                )
            self.rows.append(
                _Row(
                    p.solver,
                    p.new_tokens,
                    stop=self.stop,
                    cap=p.cont_cap,
                    keep=False,
                    phase="decode",
                    owner=p,
                    kind="continue",
                    draft=draft,
                )
            )
            p.state = "decode"
            p.clock["decode"] += time.perf_counter() - t0

    def _blame(self, stepping: list[_Problem], exc: BaseException) -> None:
        """A batched latent step raised: name the problem whose latents are no longer finite (or
        the only one stepping) and the step, as ``loop.checked_step`` does for one problem."""
        flags = torch.stack([torch.isfinite(p.stepper.latents).all() for p in stepping]).tolist()
        bad = [p for p, ok in zip(stepping, flags) if not ok] or (stepping if len(stepping) == 1 else [])
        if bad:
            p = bad[0]
            where = step_where(p.steps, f"problem {p.index}")
            if not flags[stepping.index(p)]:  # the update overflowed its latents (loop.checked_step's)
                err = overflow_error(where, "latents", p.history[-1], self.config.lr)
            else:
                err = type(exc)(f"{where}: {exc}")
            raise ProblemError(p.index, err) from exc

    def _finish(self, p: _Problem, stopped: str) -> None:
        ids, text = (p.ids, p.text) if p.ids is not None else (p.gen_ids, p.original_text)
        p.result = SeekResult(
            answer=text,
            answer_ids=list(ids),
            original_answer=p.original_text,
            original_ids=list(p.gen_ids),
            rewards=list(p.history),
            original_length=len(p.gen_ids),
            update_length=p.L,
            final_length=len(ids),
            iterations=len(p.history) - 1,
            stopped=stopped,
            backend=self.backend,
            timings=dict(p.clock),
            reused=p.stats.reused,
            decode_stats=p.stats.to_dict(),
            texts=list(p.texts),
        )
        p.state = "done"

    # -- one forward -------------------------------------------------------------------------
    def _decode_step(self) -> None:
        rows = [r for r in self.rows if r.feed and r.fork is None]
        if not rows:
            raise RuntimeError("seek_many: no row to decode while problems are in flight (a scheduler bug)")
        t0 = time.perf_counter()
        proposed = []
        for r in rows:  # past its prefill, a row feeds [its last token, *drafts]
            r.m = 0
            if r.draft is not None and r.ids:
                drafts = r.draft.propose(min(r.cap - len(r.ids) - 1, self.max_drafts))
                if drafts:
                    proposed.append((r, drafts))
        if proposed and self.config.draft_policy == "cost":
            # One width for the padded block: every row pays for the widest feed.
            floor = max((len(r.feed) for r in rows if len(r.feed) <= self.decoder.long_feed), default=1)
            width = best_width(
                [(len(d), r.draft.acceptance) for r, d in proposed],
                producing=len(rows),
                slots=self.decoder.step_rows(),
                fixed=self.forward_positions,
                floor=floor,
            )
            proposed = [(r, d[: width - len(r.feed)]) for r, d in proposed]
        for r, drafts in proposed:
            r.m = len(drafts)
            r.feed = r.feed + drafts
        hidden = self.decoder.step({r.row: r.feed for r in rows})
        fed = set(map(id, rows))
        for r in self.rows:  # forks whose source was just prefilled (before any row is dropped)
            if r.fork is not None and id(r.fork[0]) in fed:
                self.decoder.fork(r.row, r.fork[0].row, r.fork[1])
                r.fork = None
        # states[j] of a row predicts the token after its fed position j: the last one of a
        # prefill feed, every one of [token, *drafts].
        states = [hidden[r.row][-(1 + r.m) :] for r in rows]
        greedy = torch.argmax(self.head(torch.cat(states)), dim=-1).tolist()  # the step's one sync
        spent = time.perf_counter() - t0
        total = sum(len(r.feed) for r in rows)
        finished = []
        o = 0
        for r, st in zip(rows, states):
            m = r.m
            g = greedy[o : o + 1 + m]
            o += 1 + m
            share = spent * len(r.feed) / total
            r.owner.clock[r.phase] += share
            r.secs += share
            drafts = r.feed[len(r.feed) - m :] if m else []
            a = 0
            while a < m and g[a] == drafts[a]:
                a += 1
            if r.ids:  # not the prefill feed (seek counts forwards after the first token)
                r.stats.forwards += 1
                r.stats.drafted += m
                r.stats.accepted += a
            if m:
                r.draft.observe(m, a)
            done = False
            emitted = 0
            for tok in g[: a + 1]:  # stop exactly where plain greedy stops
                r.ids.append(tok)
                emitted += 1
                if r.kind == "original" and self.on_event is not None:
                    self._emit(OriginalToken(r.owner.index, tok, self.tokenizer.decode([tok])))
                if tok in r.stop or len(r.ids) >= r.cap:
                    done = True
                    break
            if r.keep:
                r.lats.append(st[:emitted])
            if 1 + m > emitted:  # keep the fed positions before the last emitted token
                self.decoder.rollback(r.row, self.decoder.length(r.row) - (1 + m - emitted))
            if r.draft is not None:
                r.draft.extend(g[:emitted])
            if done:
                r.feed = []
                finished.append(r)
            else:
                r.feed = [r.ids[-1]]
        if finished:
            done_ids = set(map(id, finished))
            self.rows = [r for r in self.rows if id(r) not in done_ids]
            for r in finished:
                self._row_done(r)

    def _row_done(self, r: _Row) -> None:
        p = r.owner
        t0 = time.perf_counter()
        if r.kind == "original":
            p.gen_ids = r.ids
            width = self.head.weight.shape[1]
            p.gen_latents = torch.cat(r.lats) if r.lats else torch.empty(0, width, device=self.device)
            self._count(p, r)
            if p.pool is not None:
                p.pool.add(r.ids)
            p.original_text = self.tokenizer.decode(r.ids)
            p.text_to_score = p.original_text
            p.clock["generate"] += time.perf_counter() - t0
            p.state = "score"
        elif r.kind == "continue":
            p.ids = p.prefix + p.new_tokens + r.ids
            p.text = self.tokenizer.decode(p.ids)
            p.text_to_score = p.text
            spent = time.perf_counter() - t0
            p.clock["decode"] += spent
            p.decode_secs = r.secs + spent
            p.decode_tokens = len(p.new_tokens) + len(r.ids)
            self._count(p, r)
            if p.pool is not None:
                p.pool.add(p.ids)
            p.state = "score"
        else:
            self._verifier_done(p, r)

    @staticmethod
    def _count(p: _Problem, r: _Row) -> None:
        """Add a solver row's decoding to the problem's ``decode_stats`` (seek's ``stats.add``)."""
        p.stats.tokens += len(r.ids)
        p.stats.forwards += r.stats.forwards
        p.stats.drafted += r.stats.drafted
        p.stats.accepted += r.stats.accepted


def iter_seek(
    model,
    tokenizer,
    problems: Sequence,
    reward=None,
    config: SeekConfig | None = None,
    *,
    batch_size: int = 8,
    on_event: Callable | None = None,
    prompts: Sequence[str] | None = None,
    dataset: str = "gsm8k",
    style: str = "boxed",
    format_rule: bool = False,
    **overrides,
) -> Iterator[tuple[int, SeekResult]]:
    """Seek every problem, up to ``batch_size`` at once; yield ``(index, SeekResult)`` as each
    finishes (see ``seek_many``). Every argument is checked before the first forward."""
    engine = Engine(
        model,
        tokenizer,
        problems,
        reward,
        config,
        batch_size=batch_size,
        on_event=on_event,
        prompts=prompts,
        dataset=dataset,
        style=style,
        format_rule=format_rule,
        **overrides,
    )
    return engine.run()


def seek_many(
    model,
    tokenizer,
    problems: Sequence,
    reward=None,
    config: SeekConfig | None = None,
    *,
    batch_size: int = 8,
    on_event: Callable | None = None,
    prompts: Sequence[str] | None = None,
    dataset: str = "gsm8k",
    style: str = "boxed",
    format_rule: bool = False,
    **overrides,
) -> list[SeekResult]:
    """``seek`` for every problem, with up to ``batch_size`` seeks in flight; results in input order.

    - ``problems``: question strings or ``data.Problem`` objects.
    - ``reward``: anything ``seek`` takes (an object with ``get_reward``, a callable
      ``(question, answer) -> float``, ``"psrm"``, ``"self"``, None), applied to every problem,
      or a list/tuple with one per problem. None: each problem's own PSRM where its gold answer
      is known, else self-reward.
    - ``style``/``format_rule``: as for ``seek`` (the solver prompt style; the self-reward format rule).
    - ``prompts``: optional already templated prompts, one per problem (``seek``'s ``prompt``).
    - ``on_event``: called with the events of ``engine.events`` as they happen.
    - ``config``/``overrides``: as for ``seek``; one config for all problems.

    Each result is the ``SeekResult`` that ``seek`` would return for that problem (``timings``
    hold the wall time attributed to it). A failing problem raises ``ProblemError`` naming its
    index (the original exception is its cause).
    """
    results: list[SeekResult | None] = [None] * len(problems)
    for index, res in iter_seek(
        model,
        tokenizer,
        problems,
        reward,
        config,
        batch_size=batch_size,
        on_event=on_event,
        prompts=prompts,
        dataset=dataset,
        style=style,
        format_rule=format_rule,
        **overrides,
    ):
        results[index] = res
    return results
