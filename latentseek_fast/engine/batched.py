"""The batched driver: ``seek_many``/``iter_seek``, many seeks in flight (continuous batching).

Each problem is a ``problem.ProblemSeek`` (Algorithm 1, as ``seek`` runs it). The driver keeps
up to ``batch_size`` of them in flight on one ``decoding.HFDecoder`` (a slot KV store: every
row its own cache positions) and repeats one round:

1. admit queued problems into free slots (a finished problem's slot takes the next one);
2. without running the model: score every answer that is due (a ``ReplyReward`` on the same
   model, such as ``SelfReward``, has its replies decoded as rows of this batch: its four
   verifier prompts share the quoted solution, so the first prefills it and the others fork
   it), apply the stop rules, and take the latent step of every problem that is due in one call
   (``latent.LatentSteps``; the ``reference`` backend, the oracle, loops per problem);
3. one ``decoding.rows.advance`` over every row that is decoding (original answers,
   continuations, replies): one forward (two when long feeds such as an admitted prompt run
   apart), drafts verified, one argmax over all fed positions.

A shared operation's wall time is split over the problems it served, in proportion to their
work (tokens fed, latent rows), so the problems' ``timings`` add up to the time spent.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from .._util import check_int, say_once
from ..backends import resolve_backend
from ..config import SeekConfig
from ..decoding import rows as decode_rows
from ..decoding.batch import prompt_rows
from ..decoding.model import lm_head_of
from ..decoding.rows import Row
from ..decoding.slots import HFDecoder, free_memory, kv_bytes_per_position
from ..decoding.stops import answer_stop_ids, reply_stop_ids
from ..prompts import build_prompt
from ..rewards import make_reward
from ..rewards.base import as_reward
from ..rewards.reply import ReplyReward
from .context import context_limit, original_cap
from .events import ProblemDone
from .latent import LatentSteps, StepError
from .problem import ProblemError, ProblemSeek, start_row, take_latent_steps
from .result import SeekResult
from .sequential import check_on_event, decode_options, problem_parts, tie_gap_of

AUTO = "auto"
# The most decoder rows ``batch_size="auto"`` keeps in flight. CPU: the scaling run
# (bench/results/scaling.csv: 64 GSM8K problems, 2-core AMD EPYC, commit 4bb8f57) gave
# 449 / 581 / 692 problems per hour at 16 / 32 / 64 in flight (cost policy); beyond that a
# step's per-row work (attention over the row's cache, its logits) dominates
# (bench/results/attention/: one token for 64 rows 244-283 ms, for 16 rows 93-134 ms).
# GPU: not measured yet; an H100's GEMMs stay weight-bound up to a few hundred rows, so 256.
CPU_AUTO_ROWS = 64
GPU_AUTO_ROWS = 256
# ``batch_size="auto"`` gives the KV store at most this fraction of the memory free when the run
# starts: the rest holds the step's activations and logits (64 rows x 9 positions x 49152 fp32
# logits = 113 MB for SmolLM2), the store's growth copies (one layer at a time) and the system.
KV_MEMORY_FRACTION = 0.5
# Rows a ReplyReward's replies take per answer, unless it says (``reply_count``): SelfReward's four.
REPLY_ROWS = 4


def auto_batch_size(
    model, problems: int, longest_row: int, rows_per_problem: int = 1, free_bytes: int | None = None
) -> tuple[int, str]:
    """How many problems ``batch_size="auto"`` keeps in flight, and why: as many as fit, at most
    ``CPU_AUTO_ROWS`` (``GPU_AUTO_ROWS`` on CUDA) decoder rows and ``problems``, at least 1.

    ``longest_row``: the most positions a row can cache (the store is rectangular, so every slot
    is that long); ``rows_per_problem``: rows a problem can hold at once (1, or 1 + its verifier
    replies); ``free_bytes``: memory free for the store (default ``decoding.slots.free_memory``;
    on a CPU shared by the ``LOCAL_WORLD_SIZE`` processes of a torchrun job, its share), of which
    ``KV_MEMORY_FRACTION`` is used."""
    device = lm_head_of(model).weight.device
    cap = GPU_AUTO_ROWS if device.type == "cuda" else CPU_AUTO_ROWS
    if free_bytes is None:
        sharing = 1 if device.type == "cuda" else max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        free_bytes = free_memory(device) // sharing
    free = free_bytes
    per_problem = kv_bytes_per_position(model) * max(1, longest_row) * rows_per_problem
    fit = int(free * KV_MEMORY_FRACTION // per_problem)
    by_rows = max(1, cap // rows_per_problem)
    n = max(1, min(problems, by_rows, fit))
    why = (
        f"{n} problems in flight: {problems} problems, {by_rows} by the {cap}-row cap "
        f"({rows_per_problem} rows each), {fit} fit in {KV_MEMORY_FRACTION:.0%} of "
        f"{free / 2**30:.1f} GiB free at {per_problem / 2**20:.0f} MiB each"
    )
    return n, why


class Engine:
    """Runs the seeks of a list of problems; ``run()`` yields ``(index, SeekResult)`` as each
    problem finishes. Every argument is checked here, before the first forward."""

    def __init__(
        self,
        model,
        tokenizer,
        problems: Sequence,
        reward=None,
        config: SeekConfig | None = None,
        *,
        batch_size: int | str = AUTO,
        on_event: Callable | None = None,
        prompts: Sequence[str] | None = None,
        dataset: str = "gsm8k",
        style: str = "boxed",
        format_rule: bool = False,
        **overrides,
    ):
        if batch_size != AUTO:
            check_int("batch_size", batch_size, note="or 'auto'")
        check_on_event(on_event)
        if isinstance(problems, (str, bytes)) or not isinstance(problems, Sequence):
            raise ValueError(
                f"problems={problems!r}: expected a sequence of questions or data.Problem objects"
            )
        self.config = SeekConfig(**{**(config.to_dict() if config else {}), **overrides})
        self.model, self.tokenizer = model, tokenizer
        self.head = lm_head_of(model)
        self.device = self.head.weight.device
        self.batch_size, self.on_event = batch_size, on_event
        n = len(problems)
        if prompts is not None and len(prompts) != n:
            raise ValueError(f"prompts has {len(prompts)} entries; expected one per problem ({n})")
        rewards = self._rewards(reward, n)
        parts = []
        for i, p in enumerate(problems):  # every question is checked before anything runs
            try:
                parts.append(problem_parts(p, dataset))
            except ValueError as e:
                raise ValueError(f"problems[{i}]: {e}") from None
        self.specs = []
        for i, (question, gold, ds) in enumerate(parts):
            try:
                obj = make_reward(
                    rewards[i], model, tokenizer, gold=gold, dataset=ds, style=style, format_rule=format_rule
                )
                fn = as_reward(obj)
            except Exception as e:
                raise ProblemError(i, e) from e
            self.specs.append((question, ds, fn))
        # Every prompt is tokenized and checked against the model's context before anything runs.
        self.context = context_limit(model)
        self.prompt_ids: list[list[int]] = []
        self.caps: list[int] = []  # the original answer's token cap (context.original_cap)
        self.labels: list[str] = []  # how the context checks name each problem
        for i, (question, ds, _) in enumerate(self.specs):
            text = (
                prompts[i]
                if prompts is not None
                else build_prompt(tokenizer, question, dataset=ds, style=style)
            )
            ids = tokenizer(text, return_tensors="pt").input_ids[0].tolist()
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
        self.stop = answer_stop_ids(tokenizer)
        self.batch_reason = f"batch_size={batch_size}"
        if batch_size == AUTO:
            self.batch_size, self.batch_reason = self._auto_batch_size()
            say_once(f"auto-{self.batch_size}", f"latentseek_fast: batch_size='auto': {self.batch_reason}")
        self.decoder = HFDecoder(model)
        self.steps = LatentSteps(model, self.config, self.backend)
        self.opts = decode_options(self.config, self.decoder, model)
        self.tie_gap = tie_gap_of(self.config, model)
        self.rows: list[Row] = []  # decoding rows, each with ``tag = (problem, kind, name)``
        self.slots: dict[int, int] = {}  # problem index -> its solver row's slot
        self.replying: dict[int, list[Row]] = {}  # problem index -> its reply rows, while they decode
        self._reply_stop: frozenset[int] | None = None

    def _auto_batch_size(self) -> tuple[int, str]:
        """``auto_batch_size`` for these problems: a row caches at most the longest prompt, the
        original answer and a continuation (``max_new_tokens`` each); a problem whose reward
        replies on this model also holds its replies' rows, each at most the prompt, the answer
        quoted and the reply's cap."""
        longest = max(map(len, self.prompt_ids)) + 2 * self.config.max_new_tokens
        reply_rows, reply_cap = 0, 0
        for _, _, fn in self.specs:
            if isinstance(fn, ReplyReward) and fn.model is self.model:
                reply_rows = max(reply_rows, getattr(fn, "reply_count", REPLY_ROWS))
                reply_cap = max(reply_cap, fn.max_new_tokens)
        if reply_rows:
            longest += reply_cap
        return auto_batch_size(self.model, len(self.specs), longest, 1 + reply_rows)

    @staticmethod
    def _rewards(reward, n: int) -> list:
        if isinstance(reward, (list, tuple)):
            if len(reward) != n:
                raise ValueError(
                    f"reward is a sequence of {len(reward)} rewards; expected one per problem ({n})"
                )
            return list(reward)
        return [reward] * n

    # -- the run -----------------------------------------------------------------------------
    def run(self) -> Iterator[tuple[int, SeekResult]]:
        queue = deque(range(len(self.specs)))
        live: list[ProblemSeek] = []
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
                self.decoder.drop_row(self.slots.pop(p.index))
                if self.on_event is not None:
                    self.on_event(ProblemDone(p.index, p.result))
                yield p.index, p.result
            if failure is not None:
                raise failure
            if any(p.state == "done" for p in live):
                continue
            if queue and len(live) < self.batch_size:
                continue  # admit before the next forward
            if live:
                self._decode_step()

    def _admit(self, index: int) -> ProblemSeek:
        question, _, fn = self.specs[index]
        t0 = time.perf_counter()
        p = ProblemSeek(
            index, question, self.prompt_ids[index], fn, self.config, self.tokenizer, backend=self.backend,
            label=f"problem {index}", answer_stop=self.stop, answer_cap=self.caps[index],
            context=self.context, emit=self.on_event, tie_gap=self.tie_gap,
        )  # fmt: skip
        slot = self.decoder.add_row()
        self.slots[index] = slot
        self._add(start_row(self.decoder, slot, p.original_job()), p, "original")
        p.clock.charge("generate", time.perf_counter() - t0)
        return p

    def _add(self, row: Row, p: ProblemSeek, kind: str, name: str | None = None) -> None:
        row.tag = (p, kind, name)
        self.rows.append(row)

    # -- everything between forwards ---------------------------------------------------------
    def _settle(self, live: list[ProblemSeek]) -> None:
        """Score what is due, apply the stop rules, take the due latent steps, start the
        continuations; repeat until only decoding is left."""
        while True:
            due = [p for p in live if p.state == "score"]
            if due:
                for p in due:
                    self._score(p)
                continue
            due = [p for p in live if p.state == "step"]
            due = [p for p in due if p.step_due()]  # the others finish here
            if due:
                self._latent_round(due)
                continue
            return

    def _score(self, p: ProblemSeek) -> None:
        try:
            if isinstance(p.reward, ReplyReward) and p.reward.model is self.model:
                self._start_replies(p)
            else:
                p.score_with()
        except Exception as e:
            raise ProblemError(p.index, e) from e

    def _start_replies(self, p: ProblemSeek) -> None:
        t0 = time.perf_counter()
        prompts = p.reply_prompts()
        if self._reply_stop is None:
            self._reply_stop = reply_stop_ids(self.tokenizer, self.model)
        ids = []
        for name, text in prompts.items():
            ids.append(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if not ids[-1]:
                raise ValueError(f"reply prompt {name!r} encodes to no tokens")
        cfg = self.config
        rows = prompt_rows(
            self.decoder, ids, stop=self._reply_stop, cap=p.reward.max_new_tokens,
            drafts_k=cfg.draft_tokens, policy=cfg.draft_policy,
        )  # fmt: skip
        for name, row in zip(prompts, rows):
            self._add(row, p, "reply", name)
        self.replying[p.index] = rows
        p.clock.charge("reward", time.perf_counter() - t0)

    def _latent_round(self, stepping: list[ProblemSeek]) -> None:
        try:
            stepped = take_latent_steps(self.steps, stepping)
        except StepError as e:
            raise ProblemError(stepping[e.position].index, e.error) from e.__cause__
        for p, (toks, gaps) in zip(stepping, stepped):
            job = p.stepped(toks, gaps)
            if job is not None:
                self._add(start_row(self.decoder, self.slots[p.index], job), p, "continue")

    # -- one forward -------------------------------------------------------------------------
    def _decode_step(self) -> None:
        finished = decode_rows.advance(self.decoder, self.head, self.rows, **self.opts)
        if self.on_event is not None:  # VerifyProgress (the problem throttles it)
            for rows in self.replying.values():
                rows[0].tag[0].verify_progress(
                    sum(r.done for r in rows), sum(len(r.ids) for r in rows), sum(r.secs for r in rows)
                )
        if not finished:
            return
        done = set(map(id, finished))
        self.rows = [r for r in self.rows if id(r) not in done]
        width = self.head.weight.shape[1]
        for row in finished:
            p, kind, name = row.tag
            try:
                if kind == "original":
                    p.original_done(row, width, self.device)
                elif kind == "continue":
                    p.continued(row)
                else:
                    t0 = time.perf_counter()
                    self.decoder.drop_row(row.slot)
                    p.replied(name, self.tokenizer.decode(row.ids, skip_special_tokens=True), row.gaps)
                    if p.state != "verify":
                        del self.replying[p.index]
                    p.clock.charge("reward", row.secs + time.perf_counter() - t0)
            except Exception as e:
                raise ProblemError(p.index, e) from e


def iter_seek(model, tokenizer, problems: Sequence, reward=None, config: SeekConfig | None = None, **options):
    """Seek every problem, up to ``batch_size`` at once; yield ``(index, SeekResult)`` as each
    finishes. Arguments and keyword options as for ``seek_many`` (``Engine``); every one is
    checked before the first forward."""
    return Engine(model, tokenizer, problems, reward, config, **options).run()


def seek_many(
    model, tokenizer, problems: Sequence, reward=None, config: SeekConfig | None = None, **options
) -> list[SeekResult]:
    """``seek`` for every problem, with up to ``batch_size`` seeks in flight; results in input order.

    - ``problems``: question strings or ``data.Problem`` objects.
    - ``reward``: anything ``seek`` takes (an object with ``get_reward``, a callable
      ``(question, answer) -> float``, ``"psrm"``, ``"self"``, None), applied to every problem,
      or a list/tuple with one per problem. None: each problem's own PSRM where its gold answer
      is known, else self-reward.
    - ``config``: as for ``seek``; one config for all problems.
    - keyword ``options`` (``Engine``'s): ``batch_size=8``; ``on_event`` (called with the events
      of ``engine.events`` as they happen); ``prompts`` (already templated prompts, one per
      problem: ``seek``'s ``prompt``); ``dataset="gsm8k"``, ``style="boxed"``,
      ``format_rule=False`` (as for ``seek``); and ``SeekConfig`` fields overriding ``config``.

    Each result is the ``SeekResult`` that ``seek`` would return for that problem (``timings``
    hold the wall time attributed to it). A failing problem raises ``ProblemError`` naming its
    index (the original exception is its cause).
    """
    results: list[SeekResult | None] = [None] * len(problems)
    for index, res in iter_seek(model, tokenizer, problems, reward, config, **options):
        results[index] = res
    return results
