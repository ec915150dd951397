"""The protocol of rewards read from the solver model's own replies (``SelfReward`` is one).

A ``ReplyReward`` builds prompts for an answer, lets the model reply to each greedily, and turns
the replies into a reward. ``compute`` does all three itself (``reply_prompts``, then
``generate_replies``: one batch of replies, then ``reward_from_replies``). The drivers take the
same three steps themselves so that a user can watch the replies decode: ``seek`` calls
``generate_replies`` with ``on_progress`` (its ``VerifyProgress`` events), and a driver that
decodes many rows at once (``seek_many``) decodes the replies as rows of its own batch, next to
the other problems' answers. The contract that makes all of them the same: ``compute(q, a) ==
reward_from_replies(q, a, {name: greedy reply of ``model`` to prompt, at most
``max_new_tokens`` new tokens, decoded without special tokens})``. So a subclass changes what is
asked in ``reply_prompts`` and how replies are read in ``reward_from_replies``, never
``compute`` or ``generate_replies``.
"""

from __future__ import annotations

from collections.abc import Callable

from ..decoding import batch
from .base import Reward


def _after(on_progress, done: int, tokens: int):
    """``on_progress`` for one prompt decoded after ``done`` others that made ``tokens`` tokens."""
    return lambda d, t: on_progress(done + d, tokens + t)


class ReplyReward(Reward):
    """Base class of rewards scored from the model's greedy replies (see the module docstring).

    Subclasses set ``model``, ``tokenizer`` and ``max_new_tokens`` and implement
    ``reply_prompts`` and ``reward_from_replies``."""

    model = None
    tokenizer = None
    max_new_tokens: int = 4096
    batched: bool = True  # False: ``compute`` decodes the replies one at a time (the research way)

    def reply_prompts(self, question: str, answer: str) -> dict[str, str]:
        """``{name: complete prompt text}`` (chat-templated; no special tokens are added)."""
        raise NotImplementedError(f"{type(self).__name__} must implement reply_prompts(question, answer)")

    def reward_from_replies(self, question: str, answer: str, replies: dict[str, str]) -> float:
        """The reward of ``answer`` from ``{name: reply}``, one reply per prompt."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement reward_from_replies(question, answer, replies)"
        )

    def generate_replies(
        self,
        prompts: list[str],
        on_progress: Callable[[int, int], None] | None = None,
        gaps: list | None = None,
    ) -> list[str]:
        """Greedy replies of ``model`` to ``prompts``, decoded without special tokens.

        ``on_progress(done, tokens)``: called as the replies decode (after every decode step)
        with the replies finished and the reply tokens produced so far. ``gaps``: a list to which
        each reply's decisions' top-2 logit gaps are appended, in order (the near-tie audit)."""
        gen = batch.greedy_generate_batch
        if self.batched:
            ids = gen(
                self.model, self.tokenizer, prompts, self.max_new_tokens, on_progress=on_progress, gaps=gaps
            )
        else:
            ids = []
            for p in prompts:
                one = None if on_progress is None else _after(on_progress, len(ids), sum(map(len, ids)))
                ids.append(
                    gen(self.model, self.tokenizer, [p], self.max_new_tokens, on_progress=one, gaps=gaps)[0]
                )
        return [self.tokenizer.decode(row, skip_special_tokens=True) for row in ids]

    def compute(self, question: str, answer: str) -> float:
        prompts = self.reply_prompts(question, answer)
        replies = self.generate_replies(list(prompts.values()))
        if len(replies) != len(prompts):
            raise RuntimeError(f"expected {len(prompts)} replies, got {len(replies)}")
        return self.reward_from_replies(question, answer, dict(zip(prompts, replies)))
