"""The LatentSeek loop (``docs/algorithm.md``) with a KV cache reused across iterations.

The prompt and the fixed answer prefix are prefilled once per problem. An iteration runs the
model only on the L re-decoded tokens and the continuation; the latent step is one of the
backends in ``steppers.py``.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field

import torch

from . import decode
from ._util import REWARD_MAX, say_once
from .backends import resolve_backend
from .config import SeekConfig
from .drafts import DecodeStats, DraftPool
from .rewards import bind_question, make_reward
from .steppers import make_stepper


@dataclass
class SeekResult:
    """What a seek produced.

    ``rewards`` is the reward history (the original answer's first); ``iterations`` the number of
    latent steps taken (``len(rewards) - 1``); ``update_length`` the number of latents optimised
    (L, or ``T - start_index`` when fewer latents follow ``start_index``; ``compat`` returns the
    research code's L instead); ``timings`` the wall seconds of each phase:
    ``generate`` (original answer), ``latent`` (gradient + update + re-decode of the L latents),
    ``decode`` (continuations) and ``reward``. ``reused``: iterations that reused an earlier
    iteration's continuation (``SeekConfig.reuse``); ``decode_stats``: ``drafts.DecodeStats`` of
    the original answer and the continuations (tokens, forwards, drafts fed and accepted).
    ``texts``: the answer each reward scored, aligned with ``rewards`` (``texts[0]`` is the
    original answer), so that an evaluation can judge every iteration (test-time scaling).
    """

    answer: str
    answer_ids: list[int]
    original_answer: str
    original_ids: list[int]
    rewards: list[float]
    original_length: int
    update_length: int
    final_length: int
    iterations: int
    stopped: str
    backend: str
    timings: dict[str, float] = field(default_factory=dict)
    reused: int = 0
    decode_stats: dict[str, int] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)

    @property
    def original_reward(self) -> float:
        return self.rewards[0]

    @property
    def final_reward(self) -> float:
        return self.rewards[-1]

    def to_dict(self) -> dict:
        return asdict(self)


class PhaseClock:
    """Wall seconds spent in each phase of a seek: ``generate``, ``latent``, ``decode``, ``reward``."""

    def __init__(self) -> None:
        self.seconds = {"generate": 0.0, "latent": 0.0, "decode": 0.0, "reward": 0.0}

    def add(self, phase: str, since: float) -> None:
        """Charge the time since ``since`` (a ``time.perf_counter()`` value) to ``phase``."""
        self.seconds[phase] += time.perf_counter() - since


@dataclass
class LoopOutcome:
    """What :func:`seek_loop` produced from an original answer.

    ``ids``/``text`` are the latest answer, or None when no step ran (the original answer
    stands); ``rewards`` is the reward history (the original answer's first); ``update_length``
    is the number of latents optimised (L, or fewer at the answer's end); ``stopped`` is
    ``threshold``, ``max_steps`` or ``no_update``; ``backend`` the concrete backend of the latent
    steps; ``texts`` the answer of each iteration (``rewards[1:]`` scored them).
    """

    ids: list[int] | None
    text: str | None
    rewards: list[float]
    update_length: int
    stopped: str
    backend: str
    texts: list[str] = field(default_factory=list)


def step_where(step: int, label: str) -> str:
    """How the numeric guard names a step: ``seek step {step + 1} of {label}``."""
    return f"seek step {step + 1} of {label}"


def check_step_reward(reward: float, where: str) -> None:
    """The guard before a latent step: a reward that is not finite or has ``|reward| >
    REWARD_MAX`` (it would overflow the fp32 gradient) raises ``ValueError`` naming ``where``."""
    if not (math.isfinite(reward) and abs(reward) <= REWARD_MAX):
        raise ValueError(
            f"{where}: reward={reward!r}: expected a finite number with |reward| <= {REWARD_MAX:g} "
            "(larger rewards overflow the fp32 gradient)"
        )


def finite_flags(latents: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
    """``[latents finite, gradient finite]`` (one entry without a gradient) as a bool tensor on the
    latents' device, so that a caller guarding many problems reads all flags in one sync."""
    finite = [torch.isfinite(latents).all()] + ([] if grad is None else [torch.isfinite(grad).all()])
    return torch.stack(finite)


def check_finite(ok: list[bool], reward: float, where: str, lr: float | None = None) -> None:
    """The guard after a latent step, from ``finite_flags(...).tolist()``: NaN/inf in the latents
    or the gradient raises ``overflow_error``'s RuntimeError."""
    if not all(ok):
        raise overflow_error(where, "latents" if not ok[0] else "gradient", reward, lr)


def overflow_error(where: str, what: str, reward: float, lr: float | None) -> RuntimeError:
    """The error of a latent step that left NaN/inf in the ``what`` (latents or gradient): it names
    ``where``, the reward and the likely cause, the learning rate ``lr`` (Adam moves every latent
    element by about lr per step)."""
    rate = "the learning rate" if lr is None else f"the learning rate lr={lr!r}"
    return RuntimeError(
        f"{where}: NaN or inf in the {what} after the update (reward {reward!r}); {rate} is the likely "
        "cause (Adam moves every latent element by about lr per step, so lr * steps must stay well "
        "inside the model dtype's range): lower lr (SeekConfig.lr, --lr), or check the model's "
        "hidden states"
    )


def checked_step(stepper, reward: float, step: int, label: str, need_next: bool) -> list[int]:
    """``stepper.step`` with the seek's numeric guard: a non-finite or out-of-range reward, and
    NaN/inf latents or gradient after the update, stop the seek with an error naming the step
    and the problem. Cost per step: one ``isfinite`` pass over the L*d latents and gradient and
    one device sync, next to the step's own pass over the V*d LM head. (``seek_many`` guards its
    batched steps with the same pieces: ``check_step_reward``, ``finite_flags``, ``check_finite``.)"""
    where = step_where(step, label)
    check_step_reward(reward, where)
    lr = getattr(getattr(stepper, "config", None), "lr", None)
    try:
        tokens = stepper.step(reward, need_next=need_next)
    except (ValueError, RuntimeError) as exc:  # e.g. the op's checks on latents that became inf
        if type(exc) not in (ValueError, RuntimeError):
            raise  # subclasses (out of memory, ...) keep their type
        if not bool(torch.isfinite(stepper.state()[0]).all()):  # the update overflowed the latents
            raise overflow_error(where, "latents", reward, lr) from exc
        raise type(exc)(f"{where}: {exc}") from exc
    check_finite(finite_flags(*stepper.state()).tolist(), reward, where, lr)
    return tokens


_checked_step = checked_step  # the name tests and older callers use


def check_on_event(on_event) -> None:
    """``on_event`` must be None or a callable taking one event: a TypeError naming it otherwise,
    before anything runs (not at the first event)."""
    if on_event is not None and not callable(on_event):
        raise TypeError(f"on_event={on_event!r}: expected a callable taking one event, or None")


def context_limit(model) -> int | None:
    """The model's context in positions (``config.max_position_embeddings``), or None when its
    config does not give one (then nothing is checked)."""
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def check_prompt_fits(prompt_length: int, limit: int | None, label: str | None) -> None:
    """A ValueError naming ``label`` (when given) and both lengths when a prompt of
    ``prompt_length`` tokens leaves no room for an answer in the model's context of ``limit``
    positions: past ``max_position_embeddings`` a model computes garbage without any error."""
    if limit is not None and prompt_length >= limit:
        raise ValueError(
            (f"{label}: " if label else "") + f"the prompt is {prompt_length} tokens and the model's context "
            f"(config.max_position_embeddings) is {limit} positions: no room for an answer "
            "(shorten the question or use a model with a longer context)"
        )


def original_cap(prompt_length: int, max_new_tokens: int, limit: int | None, label: str) -> int:
    """The original answer's token cap: ``max_new_tokens``, lowered with a warning to
    ``limit - prompt_length`` so that prompt + answer fit the model's context (see
    ``check_prompt_fits``, which this applies first)."""
    check_prompt_fits(prompt_length, limit, label)
    if limit is None or prompt_length + max_new_tokens <= limit:
        return max_new_tokens
    room = limit - prompt_length
    warnings.warn(
        f"{label}: the prompt is {prompt_length} tokens and the model's context "
        f"(config.max_position_embeddings) is {limit} positions: the original answer is capped at "
        f"{room} tokens instead of max_new_tokens={max_new_tokens}, and continuations stop at the "
        "context's end",
        stacklevel=3,
    )
    return room


def continuation_cap(
    prompt_length: int, start: int, L: int, max_new_tokens: int, limit: int | None, label: str
) -> int:
    """A continuation's token cap: ``max_new_tokens``, lowered so that the model is never run at
    a position past its context. A continuation feeds the prompt's ``prompt_length`` tokens, the
    ``start`` fixed answer tokens and the L re-decoded ones, then each token it makes but the last:
    at most ``limit - prompt_length - start - L + 1`` tokens (at least 1, since the original answer
    was capped at ``limit - prompt_length``). Warns when this binds and the original's warning
    (``original_cap``) did not already say so."""
    if limit is None:
        return max_new_tokens
    room = limit - prompt_length - start - L + 1
    if room < 1:
        raise ValueError(
            f"{label}: prompt ({prompt_length}) + start_index ({start}) + L ({L}) tokens leave no room "
            f"for a continuation in the model's context of {limit} positions"
        )
    if room >= max_new_tokens:
        return max_new_tokens
    if prompt_length + max_new_tokens <= limit:  # else original_cap has warned
        warnings.warn(
            f"{label}: the prompt ({prompt_length} tokens), start_index={start} and L={L} leave room "
            f"for {room} continuation tokens in the model's context (config.max_position_embeddings) "
            f"of {limit} positions: continuations are capped there instead of "
            f"max_new_tokens={max_new_tokens}",
            stacklevel=3,
        )
    return room


def seek_loop(
    model,
    tokenizer,
    *,
    prompt_ids: torch.Tensor,
    answer_ids: list[int],
    latents: torch.Tensor,
    r0: float,
    score,
    config: SeekConfig,
    cont_stop: frozenset[int],
    cont_max_tokens: int,
    clock: PhaseClock,
    prompt_cache=None,
    on_event=None,
    label: str = "the problem",
    pool=None,
    stats=None,
    reuse_reward: bool = False,
    answer_complete: bool = False,
    context: int | None = None,
) -> LoopOutcome:
    """Steps 2-5 of Algorithm 1 from an original answer (see ``docs/algorithm.md``).

    ``latents[t]`` produced ``answer_ids[t]``. ``prompt_cache``, when given, holds at least the
    prompt and the answer prefix (it is truncated and reused); else the prefix is prefilled here.
    ``score`` maps an answer text to its reward. ``on_event`` gets an
    ``engine.events.IterationDone`` after each iteration; ``label`` names the problem in errors.

    With ``config.draft_tokens`` > 0 the continuations are drafted from ``pool`` (a
    ``drafts.DraftPool``; by default one over the prompt and the answer), and each continuation is
    added to it. With ``config.reuse``, re-decoded tokens seen in an earlier iteration reuse its
    continuation, and its reward when ``reuse_reward`` (the reward is deterministic);
    ``answer_complete`` says that ``answer_ids`` itself is such a continuation (decoded greedily
    with ``cont_stop`` and ended by one of them), so re-decoding its own tokens reuses it.
    ``stats`` (a ``drafts.DecodeStats``), when given, counts the decoding and the reuses.
    ``context``: the model's context in positions; continuations stop before running the model
    past it (``continuation_cap``). None: no cap (``compat``, as the research code).

    The outcome's ``update_length`` is the number of latents optimised: L, or fewer when
    ``start_index + L`` passes the answer's end (only the latents after ``start_index`` exist).
    """
    T = int(latents.shape[0])
    L = config.update_length(T)
    backend = resolve_backend(config.backend, latents.device, latent_dtype=config.latent_dtype)
    history = [r0]
    if L <= 0:
        return LoopOutcome(None, None, history, 0, "no_update", backend)
    texts: list[str] = []
    start = config.start_index
    if start >= T:
        raise ValueError(f"start_index={start}: must be below the answer length T={T}")
    rows = latents[start : start + L]
    L = int(rows.shape[0])  # min(L, T - start): what is optimised
    cont_max_tokens = continuation_cap(int(prompt_ids.shape[1]), start, L, cont_max_tokens, context, label)
    prefix = list(answer_ids[:start])
    base = torch.cat([prompt_ids[0], torch.tensor(prefix, dtype=torch.long, device=prompt_ids.device)])
    base_len = int(base.numel())
    if prompt_cache is None or decode.cache_length(prompt_cache) < base_len:
        prompt_cache = decode.new_cache(model)
        decode.prefill(model, base.view(1, -1), prompt_cache)
    else:
        decode.truncate_cache(prompt_cache, base_len)

    t0 = time.perf_counter()
    stepper = make_stepper(model, rows, config, backend)
    clock.add("latent", t0)
    if config.draft_tokens and pool is None:
        pool = DraftPool([prompt_ids[0].tolist(), list(answer_ids)])
    seen: dict[tuple[int, ...], tuple[list[int], str, float]] = {}  # re-decoded tokens -> outcome
    if answer_complete and T - start - L <= cont_max_tokens:
        seen[tuple(answer_ids[start : start + L])] = (list(answer_ids), tokenizer.decode(answer_ids), r0)
    reward_now = r0
    ids = text = None
    stopped = "max_steps"
    for step in range(config.max_steps):
        if reward_now > config.reward_threshold:
            stopped = "threshold"
            break
        t0 = time.perf_counter()
        new_tokens = checked_step(stepper, reward_now, step, label, need_next=step + 1 < config.max_steps)
        clock.add("latent", t0)

        key = tuple(new_tokens)
        reused = config.reuse and key in seen  # the same input: greedy gives the same continuation
        t_dec = time.perf_counter()
        made = 0
        if reused:
            ids, text, earlier = seen[key]
            if stats is not None:
                stats.reused += 1
        else:
            decode.truncate_cache(prompt_cache, base_len)
            x = torch.tensor([new_tokens], dtype=torch.long, device=prompt_ids.device)
            h = decode.prefill(model, x, prompt_cache)
            row = (
                pool.row(base.tolist() + new_tokens, k=config.draft_tokens, policy=config.draft_policy)
                if pool is not None
                else None
            )
            cont = decode.greedy_continue(
                model,
                prompt_cache,
                h,
                stop=cont_stop,
                max_tokens=cont_max_tokens,
                keep_latents=False,
                drafts=row,
            )
            ids = prefix + new_tokens + cont.ids
            text = tokenizer.decode(ids)
            made = len(new_tokens) + len(cont.ids)
            if pool is not None:
                pool.add(ids)
            if stats is not None:
                stats.add(cont)
            clock.add("decode", t_dec)

        t0 = t1 = time.perf_counter()
        reward_now = earlier if reused and reuse_reward else score(text)
        clock.add("reward", t0)
        if config.reuse and not reused:
            seen[key] = (ids, text, reward_now)
        history.append(reward_now)
        texts.append(text)
        if on_event is not None:
            from .engine.events import IterationDone, rate

            secs = t1 - t_dec
            on_event(IterationDone(0, len(history) - 1, reward_now, len(ids), secs, rate(made, secs), made))
    return LoopOutcome(ids, text, history, L, stopped, backend, texts)


def problem_parts(problem, dataset):
    """``(question, gold, dataset)`` from a string or a ``data.Problem``."""
    if hasattr(problem, "question"):
        question, gold, dataset = problem.question, getattr(problem, "gold", None), problem.dataset or dataset
    else:
        question, gold = problem, None
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"problem={problem!r}: expected a non-empty question")
    return question, gold, dataset


def seek(
    model,
    tokenizer,
    problem,
    reward=None,
    config: SeekConfig | None = None,
    *,
    prompt: str | None = None,
    dataset: str = "gsm8k",
    style: str = "boxed",
    format_rule: bool = False,
    on_event=None,
    **overrides,
) -> SeekResult:
    """Answer ``problem`` greedily, then improve the answer by policy gradient on its latents.

    ``problem``: a question string or a ``latentseek_fast.data.Problem``. ``reward``: any object with
    ``get_reward(question, answer)``, any callable ``(question, answer) -> float``, ``"psrm"``,
    ``"self"`` or None (PSRM when the problem has a gold answer, else self-reward); see
    ``rewards.make_reward``, which also receives ``style`` and ``format_rule``. ``prompt``: an
    already templated prompt; by default one is built with ``prompts.build_prompt``.
    ``overrides`` replace fields of ``config``. ``on_event``: called with progress events as they
    happen (``latentseek_fast.engine.events``: each original token, the scored original answer,
    each iteration, the result; index 0); anything else but None raises TypeError up front.

    A prompt that fills the model's context (``config.max_position_embeddings``) raises
    ValueError before decoding; when prompt + ``max_new_tokens`` would pass it, the answers are
    capped at the context with a warning (``original_cap``, ``continuation_cap``).
    """
    check_on_event(on_event)
    config = SeekConfig(**{**(config.to_dict() if config else {}), **overrides})
    question, gold, dataset = problem_parts(problem, dataset)
    label = f"problem {problem.id!r}" if hasattr(problem, "id") else f"question {question[:60]!r}"
    head = decode.lm_head_of(model)
    if prompt is None:
        from .prompts import build_prompt

        prompt = build_prompt(tokenizer, question, dataset=dataset, style=style)
    reward_obj = make_reward(
        reward, model, tokenizer, gold=gold, dataset=dataset, style=style, format_rule=format_rule
    )
    score = bind_question(reward_obj, question)
    device = head.weight.device
    # Before decoding: a backend that cannot run (or would crawl under Triton's interpreter) fails now.
    resolve_backend(
        config.backend,
        device,
        latent_dtype=config.latent_dtype,
        head_shape=tuple(head.weight.shape),
        max_steps=config.max_steps,
    )
    clock = PhaseClock()

    from .rewards.base import as_reward

    stats = DecodeStats()
    reuse_reward = bool(getattr(as_reward(reward_obj), "deterministic", False))

    t0 = time.perf_counter()
    prompt_ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
    context = context_limit(model)
    max_tokens = original_cap(int(prompt_ids.shape[1]), config.max_new_tokens, context, label)
    cache = decode.new_cache(model)
    h = decode.prefill(model, prompt_ids, cache)
    on_token = None
    if on_event is not None:
        from .engine import events

        on_token = lambda tok: on_event(events.OriginalToken(0, tok, tokenizer.decode([tok])))  # noqa: E731
    pool = row = None
    if config.draft_tokens:
        pool = DraftPool([prompt_ids[0].tolist()])
        row = pool.row(prompt_ids[0].tolist(), k=config.draft_tokens, policy=config.draft_policy)
    gen = decode.greedy_continue(
        model,
        cache,
        h,
        stop=decode.stop_ids(tokenizer),
        max_tokens=max_tokens,
        on_token=on_token,
        drafts=row,
    )
    stats.add(gen)
    if pool is not None:
        pool.add(gen.ids)
    original_text = tokenizer.decode(gen.ids)
    clock.add("generate", t0)

    t0 = time.perf_counter()
    r0 = score(original_text)
    clock.add("reward", t0)
    if on_event is not None:
        T, secs = len(gen.ids), clock.seconds["generate"]
        on_event(events.OriginalDone(0, original_text, T, r0, secs, events.rate(T, secs)))

    out = seek_loop(
        model,
        tokenizer,
        prompt_ids=prompt_ids,
        answer_ids=gen.ids,
        latents=gen.latents,
        r0=r0,
        score=score,
        config=config,
        cont_stop=decode.stop_ids(tokenizer),
        cont_max_tokens=config.max_new_tokens,
        clock=clock,
        prompt_cache=cache,
        on_event=on_event,
        label=label,
        pool=pool,
        stats=stats,
        reuse_reward=reuse_reward,
        answer_complete=gen.stopped_by == "stop",
        context=context,
    )
    ids, text = (gen.ids, original_text) if out.ids is None else (out.ids, out.text)
    say_once(f"seek-backend-{out.backend}", f"latentseek_fast: latent steps on the '{out.backend}' backend")
    result = SeekResult(
        answer=text,
        answer_ids=list(ids),
        original_answer=original_text,
        original_ids=list(gen.ids),
        rewards=out.rewards,
        original_length=len(gen.ids),
        update_length=out.update_length,
        final_length=len(ids),
        iterations=len(out.rewards) - 1,
        stopped=out.stopped,
        backend=out.backend,
        timings=clock.seconds,
        reused=stats.reused,
        decode_stats=stats.to_dict(),
        texts=[original_text, *out.texts],
    )
    if on_event is not None:
        on_event(events.ProblemDone(0, result))
    return result
