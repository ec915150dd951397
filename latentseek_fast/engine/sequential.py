"""The sequential driver: one problem's seek (``problem.ProblemSeek``) on a plain cache.

``seek()`` runs here. The decoder is ``decoding.CacheDecoder``, one transformers cache, so any
causal LM that transformers can run works (sliding-window or other attention implementations
included, which the batched driver's slot store cannot serve). Rewards are called as they are;
a ``ReplyReward`` such as ``SelfReward`` decodes its four replies in one batch of its own (its
``generate_replies``, whose progress becomes ``VerifyProgress`` events; ``ProblemSeek.score_with``).
``compat`` runs the same driver from a given original answer with the research code's stop
rules (``continue_seek``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from .._util import say_once
from ..audit import resolve_tie_gap
from ..backends import resolve_backend
from ..config import SeekConfig
from ..decoding import rows as decode_rows
from ..decoding.decoder import CacheDecoder, Decoder
from ..decoding.model import lm_head_of, softcap_of
from ..decoding.slots import HFDecoder
from ..decoding.stops import answer_stop_ids
from ..ops.lpg_reference import top2_gap
from ..prompts import build_prompt
from ..rewards import make_reward
from ..rewards.base import as_reward
from .context import context_limit, original_cap
from .events import ProblemDone
from .latent import LatentSteps, StepError
from .problem import ProblemSeek, start_row, take_latent_steps
from .result import SeekResult


def decode_options(config: SeekConfig, decoder: Decoder, model) -> dict:
    """The options of ``decoding.rows.advance`` for a run of ``model``: the draft policy, the most
    drafts a feed may carry (on the slot store, drafts stay in the main forward, below its
    long-feed width; a plain cache has one forward anyway) and the final logit softcap (for the
    decisions' gaps)."""
    k = config.draft_tokens
    return {
        "policy": config.draft_policy,
        "max_drafts": min(k, decoder.long_feed - 1) if isinstance(decoder, HFDecoder) else k,
        "softcap": softcap_of(model),
    }


def tie_gap_of(config: SeekConfig, model) -> float:
    """The near-tie audit's threshold for ``model``: ``config.tie_gap``, else the default for the
    dtype of its LM head (``audit.TIE_GAPS``)."""
    return resolve_tie_gap(config.tie_gap, lm_head_of(model).weight.dtype)


def run_problem(p: ProblemSeek, model, steps: LatentSteps, decoder: Decoder | None = None) -> SeekResult:
    """Drive ``p`` to its end on ``decoder`` (a fresh ``CacheDecoder`` by default); errors keep
    their type (a latent step's names the step and the problem)."""
    head = lm_head_of(model)
    device, width = head.weight.device, head.weight.shape[1]
    decoder = CacheDecoder(model) if decoder is None else decoder
    opts = decode_options(p.config, decoder, model)
    slot = decoder.add_row()
    if p.state == "generate":
        row = start_row(decoder, slot, p.original_job())
        decode_rows.run(decoder, head, [row], **opts)
        p.original_done(row, width, device)
    while p.state != "done":
        if p.state == "score":
            p.score_with()
        elif p.step_due():
            try:
                ((tokens, gaps),) = take_latent_steps(steps, [p])
            except StepError as e:
                raise e.error from e.__cause__
            job = p.stepped(tokens, gaps)
            if job is not None:
                row = start_row(decoder, slot, job)
                decode_rows.run(decoder, head, [row], **opts)
                p.continued(row)
    return p.result


def problem_parts(problem, dataset):
    """``(question, gold, dataset)`` from a string or a ``data.Problem``."""
    if hasattr(problem, "question"):
        question, gold, dataset = problem.question, getattr(problem, "gold", None), problem.dataset or dataset
    else:
        question, gold = problem, None
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"problem={problem!r}: expected a non-empty question")
    return question, gold, dataset


def check_on_event(on_event) -> None:
    """``on_event`` must be None or a callable taking one event: a TypeError naming it otherwise,
    before anything runs (not at the first event)."""
    if on_event is not None and not callable(on_event):
        raise TypeError(f"on_event={on_event!r}: expected a callable taking one event, or None")


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
    on_event: Callable | None = None,
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
    capped at the context with a warning (``engine.context``).
    """
    check_on_event(on_event)
    config = SeekConfig(**{**(config.to_dict() if config else {}), **overrides})
    question, gold, dataset = problem_parts(problem, dataset)
    label = f"problem {problem.id!r}" if hasattr(problem, "id") else f"question {question[:60]!r}"
    head = lm_head_of(model)
    if prompt is None:
        prompt = build_prompt(tokenizer, question, dataset=dataset, style=style)
    reward_obj = make_reward(
        reward, model, tokenizer, gold=gold, dataset=dataset, style=style, format_rule=format_rule
    )
    # Before decoding: a backend that cannot run (or would crawl under Triton's interpreter) fails now.
    backend = resolve_backend(
        config.backend,
        head.weight.device,
        latent_dtype=config.latent_dtype,
        head_shape=tuple(head.weight.shape),
        max_steps=config.max_steps,
    )
    t0 = time.perf_counter()
    prompt_ids = tokenizer(prompt, return_tensors="pt").input_ids[0].tolist()
    context = context_limit(model)
    cap = original_cap(len(prompt_ids), config.max_new_tokens, context, label)
    p = ProblemSeek(
        0, question, prompt_ids, as_reward(reward_obj), config, tokenizer, backend=backend, label=label,
        answer_stop=answer_stop_ids(tokenizer), answer_cap=cap, context=context, emit=on_event,
        tie_gap=tie_gap_of(config, model),
    )  # fmt: skip
    p.clock.charge("generate", time.perf_counter() - t0)
    result = run_problem(p, model, LatentSteps(model, config, backend))
    say_once(f"seek-backend-{backend}", f"latentseek_fast: latent steps on the '{backend}' backend")
    if on_event is not None:
        on_event(ProblemDone(0, result))
    return result


def continue_seek(
    model,
    tokenizer,
    *,
    question: str,
    prompt_ids: list[int],
    answer_ids: list[int],
    latents: torch.Tensor,
    answer_text: str,
    r0: float,
    reward,
    config: SeekConfig,
    cont_stop: frozenset[int],
    cont_cap: int,
) -> SeekResult:
    """Algorithm 1 from an original answer already decoded and scored ``r0`` (``compat``):
    ``latents[t]`` produced token t; the continuations stop at ``cont_stop`` or ``cont_cap``."""
    backend = resolve_backend(config.backend, latents.device, latent_dtype=config.latent_dtype)
    p = ProblemSeek(
        0, question, prompt_ids, as_reward(reward), config, tokenizer, backend=backend,
        label="the problem", answer_stop=cont_stop, cont_stop=cont_stop, cont_cap=cont_cap,
        tie_gap=tie_gap_of(config, model),
    )  # fmt: skip
    head = lm_head_of(model)
    with torch.no_grad():  # the given answer's decisions, rescored from the latents that made them
        gaps = top2_gap(head(latents.to(head.weight.dtype)), softcap_of(model)).tolist()
    p.from_answer(answer_ids, latents, answer_text, r0, gaps)
    return run_problem(p, model, LatentSteps(model, config, backend))
