"""The LatentSeek loop (LATENTSEEK.md sections 1-2) with a KV cache reused across iterations.

The prompt and the fixed answer prefix are prefilled once per problem. An iteration runs the
model only on the L re-decoded tokens and the continuation; the latent step is one of the
backends in ``steppers.py``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch

from . import decode as D
from ._util import say_once
from .config import SeekConfig
from .drafts import DecodeStats, DraftPool
from .steppers import make_stepper, resolve_backend


@dataclass
class SeekResult:
    """What a seek produced.

    ``rewards`` is the reward history (the original answer's first); ``iterations`` the number of
    latent steps taken (``len(rewards) - 1``); ``timings`` the wall seconds of each phase:
    ``generate`` (original answer), ``latent`` (gradient + update + re-decode of the L latents),
    ``decode`` (continuations) and ``reward``. ``reused``: iterations that reused an earlier
    iteration's continuation (``SeekConfig.reuse``); ``decode_stats``: ``drafts.DecodeStats`` of
    the original answer and the continuations (tokens, forwards, drafts fed and accepted).
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

    @property
    def original_reward(self) -> float:
        return self.rewards[0]

    @property
    def final_reward(self) -> float:
        return self.rewards[-1]

    def to_dict(self) -> dict:
        return asdict(self)


class _Clock:
    def __init__(self) -> None:
        self.t = {"generate": 0.0, "latent": 0.0, "decode": 0.0, "reward": 0.0}

    def add(self, phase: str, since: float) -> None:
        self.t[phase] += time.perf_counter() - since


def _reward_fn(reward, question: str):
    from .rewards.base import as_reward

    fn = as_reward(reward)
    return lambda text: fn(question, text)


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
    clock: _Clock,
    prompt_cache=None,
    pool=None,
    stats=None,
    reuse_reward: bool = False,
    answer_complete: bool = False,
):
    """Steps 2-5 of Algorithm 1 from an original answer.

    Returns ``(ids, text, rewards, L, stopped, backend)``.

    ``latents[t]`` produced ``answer_ids[t]``. ``prompt_cache``, when given, holds at least the
    prompt and the answer prefix (it is truncated and reused); else the prefix is prefilled here.
    The original answer is returned (as ``None`` ids) when nothing was stepped.

    With ``config.draft_tokens`` > 0 the continuations are drafted from ``pool`` (a
    ``drafts.DraftPool``; by default one over the prompt and the answer), and each continuation is
    added to it. With ``config.reuse``, re-decoded tokens seen in an earlier iteration reuse its
    continuation, and its reward when ``reuse_reward`` (the reward is deterministic);
    ``answer_complete`` says that ``answer_ids`` itself is such a continuation (decoded greedily
    with ``cont_stop`` and ended by one of them), so re-decoding its own tokens reuses it.
    ``stats`` (a ``drafts.DecodeStats``), when given, counts the decoding and the reuses.
    """
    T = int(latents.shape[0])
    L = min(int(config.rho * T), config.max_update_length)
    backend = resolve_backend(config, latents.device)
    history = [r0]
    if L <= 0:
        return None, None, history, 0, "no_update", backend
    start = config.start_index
    if start >= T:
        raise ValueError(f"start_index={start}: must be below the answer length T={T}")
    rows = latents[start : start + L]
    prefix = list(answer_ids[:start])
    base = torch.cat([prompt_ids[0], torch.tensor(prefix, dtype=torch.long, device=prompt_ids.device)])
    base_len = int(base.numel())
    if prompt_cache is None or D.cache_length(prompt_cache) < base_len:
        prompt_cache = D.new_cache(model)
        D.prefill(model, base.view(1, -1), prompt_cache)
    else:
        D.truncate_cache(prompt_cache, base_len)

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
        new_tokens = stepper.step(reward_now, need_next=step + 1 < config.max_steps)
        clock.add("latent", t0)

        key = tuple(new_tokens)
        reused = config.reuse and key in seen  # the same input: greedy gives the same continuation
        if reused:
            ids, text, earlier = seen[key]
            if stats is not None:
                stats.reused += 1
        else:
            t0 = time.perf_counter()
            D.truncate_cache(prompt_cache, base_len)
            x = torch.tensor([new_tokens], dtype=torch.long, device=prompt_ids.device)
            h = D.prefill(model, x, prompt_cache)
            row = pool.row(base.tolist() + new_tokens, k=config.draft_tokens) if pool is not None else None
            cont = D.greedy_continue(
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
            if pool is not None:
                pool.add(ids)
            if stats is not None:
                stats.add(cont)
            clock.add("decode", t0)

        t0 = time.perf_counter()
        reward_now = earlier if reused and reuse_reward else score(text)
        clock.add("reward", t0)
        if config.reuse and not reused:
            seen[key] = (ids, text, reward_now)
        history.append(reward_now)
    return ids, text, history, L, stopped, backend


def _problem_parts(problem, dataset, style):
    """``(question, gold, dataset)`` from a string or a ``data.Problem``."""
    if hasattr(problem, "question"):
        question, gold, dataset = problem.question, getattr(problem, "gold", None), problem.dataset or dataset
    else:
        question, gold = problem, None
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"problem={problem!r}: expected a non-empty question")
    return question, gold, dataset


def make_reward(reward, model, tokenizer, gold, dataset, style):
    """Resolve ``reward``: an object/callable, ``"psrm"``, ``"self"``, or None.

    None means PSRM when a gold answer is known, else self-reward.
    """
    from .rewards import PSRM, SelfReward

    if reward is None:
        reward = "psrm" if gold is not None else "self"
    if reward == "psrm":
        if gold is None:
            raise ValueError("reward='psrm' needs a ground-truth answer (a Problem with gold)")
        return PSRM(gold, dataset=dataset, style=style)
    if reward == "self":
        return SelfReward(model, tokenizer)
    if isinstance(reward, str):
        raise ValueError(f"reward={reward!r}: allowed strings are 'psrm' and 'self', or pass a callable")
    return reward


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
    **overrides,
) -> SeekResult:
    """Answer ``problem`` greedily, then improve the answer by policy gradient on its latents.

    ``problem``: a question string or a ``latentseek_fast.data.Problem``. ``reward``: any object with
    ``get_reward(question, answer)``, any callable ``(question, answer) -> float``, ``"psrm"``,
    ``"self"`` or None (PSRM when the problem has a gold answer, else self-reward). ``prompt``:
    an already templated prompt; by default one is built with ``prompts.build_prompt``.
    ``overrides`` replace fields of ``config``.
    """
    config = SeekConfig(**{**(config.to_dict() if config else {}), **overrides})
    question, gold, dataset = _problem_parts(problem, dataset, style)
    head = D.lm_head_of(model)
    if prompt is None:
        from .prompts import build_prompt

        prompt = build_prompt(tokenizer, question, dataset=dataset, style=style)
    reward_obj = make_reward(reward, model, tokenizer, gold, dataset, style)
    score = _reward_fn(reward_obj, question)
    device = head.weight.device
    clock = _Clock()

    from .rewards.base import as_reward

    stats = DecodeStats()
    reuse_reward = bool(getattr(as_reward(reward_obj), "deterministic", False))

    t0 = time.perf_counter()
    prompt_ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
    cache = D.new_cache(model)
    h = D.prefill(model, prompt_ids, cache)
    pool = row = None
    if config.draft_tokens:
        pool = DraftPool([prompt_ids[0].tolist()])
        row = pool.row(prompt_ids[0].tolist(), k=config.draft_tokens)
    gen = D.greedy_continue(
        model, cache, h, stop=D.stop_ids(tokenizer), max_tokens=config.max_new_tokens, drafts=row
    )
    stats.add(gen)
    if pool is not None:
        pool.add(gen.ids)
    original_text = tokenizer.decode(gen.ids)
    clock.add("generate", t0)

    t0 = time.perf_counter()
    r0 = score(original_text)
    clock.add("reward", t0)

    ids, text, history, L, stopped, backend = seek_loop(
        model,
        tokenizer,
        prompt_ids=prompt_ids,
        answer_ids=gen.ids,
        latents=gen.latents,
        r0=r0,
        score=score,
        config=config,
        cont_stop=D.stop_ids(tokenizer),
        cont_max_tokens=config.max_new_tokens,
        clock=clock,
        prompt_cache=cache,
        pool=pool,
        stats=stats,
        reuse_reward=reuse_reward,
        answer_complete=gen.stopped_by == "stop",
    )
    if ids is None:
        ids, text = gen.ids, original_text
    say_once(f"seek-backend-{backend}", f"latentseek_fast: latent steps on the '{backend}' backend")
    return SeekResult(
        answer=text,
        answer_ids=list(ids),
        original_answer=original_text,
        original_ids=list(gen.ids),
        rewards=history,
        original_length=len(gen.ids),
        update_length=L,
        final_length=len(ids),
        iterations=len(history) - 1,
        stopped=stopped,
        backend=backend,
        timings=clock.t,
        reused=stats.reused,
        decode_stats=stats.to_dict(),
    )
