"""Progress events of ``seek`` and ``seek_many`` (passed to ``on_event(event)`` as they happen).

``index`` is the problem's position in the input (0 for ``seek``). Events of different
problems interleave under ``seek_many``; a problem's own events come in order:
``OriginalToken``... ``OriginalDone``, ``IterationDone``..., ``ProblemDone``, with
``VerifyProgress`` events before the ``OriginalDone`` or ``IterationDone`` of an answer that a
``ReplyReward`` (self-reward) scores, while its verifier replies decode, and
``DecodeProgress`` events while a long continuation decodes.
``tokens_per_s`` counts the tokens a phase produced over the wall seconds attributed to it
(under ``seek_many`` a shared forward's time is split over the rows it advanced).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OriginalToken:
    """One token of the original (greedy) answer, as soon as it is decoded."""

    index: int
    token_id: int
    text: str  # the token decoded alone (special tokens kept)


@dataclass(frozen=True)
class OriginalDone:
    """The original answer is complete and scored."""

    index: int
    answer: str
    length: int  # T, tokens
    reward: float
    seconds: float  # decoding time of the answer
    tokens_per_s: float


@dataclass(frozen=True)
class IterationDone:
    """A latent step, its continuation and the new answer's reward are done."""

    index: int
    iteration: int  # 1-based
    reward: float
    length: int  # tokens of the new answer
    seconds: float  # decoding time of the continuation
    tokens_per_s: float
    tokens: int = 0  # tokens the continuation fed and decoded (0 when an earlier one was reused)


# ``VerifyProgress`` comes at most this often per problem while replies decode (plus when one
# starts or finishes), so that ``on_event`` is not called per token.
VERIFY_PROGRESS_SECONDS = 2.0


@dataclass(frozen=True)
class VerifyProgress:
    """The verifier replies of an answer are decoding (a ``ReplyReward`` such as self-reward).

    Sent when the replies start (``replies_done == 0``), when each one finishes, and in between
    at most every ``VERIFY_PROGRESS_SECONDS`` per problem; ``replies_done == replies_total`` is
    the last one before the answer's ``OriginalDone``/``IterationDone``.
    """

    index: int
    answer: int  # the answer being scored: 0 the original, k the answer of iteration k
    replies_done: int
    replies_total: int
    tokens: int  # reply tokens decoded so far (all replies of this answer)
    seconds: float  # decoding time of the replies so far
    tokens_per_s: float


@dataclass(frozen=True)
class DecodeProgress:
    """The continuation of a latent step is decoding (it can run to ``max_new_tokens``): sent
    at most every ``VERIFY_PROGRESS_SECONDS`` per problem, before the iteration's
    ``VerifyProgress``/``IterationDone``."""

    index: int
    iteration: int  # 1-based, as in IterationDone
    tokens: int  # tokens decoded so far
    seconds: float  # wall seconds since the continuation started
    tokens_per_s: float


@dataclass(frozen=True)
class ProblemDone:
    """The seek of one problem is finished; ``result`` is its ``SeekResult``."""

    index: int
    result: Any


def rate(tokens: int, seconds: float) -> float:
    """Tokens per second (0.0 for no elapsed time)."""
    return tokens / seconds if seconds > 0 else 0.0
