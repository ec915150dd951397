"""The model's context length: prompts that fill it are refused, answers are capped to fit it.

Past ``config.max_position_embeddings`` a model computes garbage without any error (an 8308-token
problem on SmolLM2, whose context is 8192, "answered" with newlines). So every driver checks each
prompt before decoding anything (``check_prompt_fits``), lowers the original answer's cap to what
the context leaves (``original_cap``, with a warning) and never runs a continuation past it
(``continuation_cap``). ``compat`` checks nothing, as the research code.
"""

from __future__ import annotations

import warnings


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
