"""The protocol of rewards read from the solver model's own replies (``SelfReward`` is one).

A ``ReplyReward`` builds prompts for an answer, lets the model reply to each greedily, and turns
the replies into a reward. ``compute`` does all three itself (one batch of replies); a driver
that decodes many rows at once (``seek_many``) instead decodes the replies as rows of its own
batch, next to the other problems' answers, and calls ``reward_from_replies``. The contract that
makes both the same: ``compute(q, a) == reward_from_replies(q, a, {name: greedy reply of
``model`` to prompt, at most ``max_new_tokens`` new tokens, decoded without special tokens})``.
So a subclass changes what is asked in ``reply_prompts`` and how replies are read in
``reward_from_replies``, never ``compute``.
"""

from __future__ import annotations

from ..decoding import batch
from .base import Reward


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

    def generate_replies(self, prompts: list[str]) -> list[str]:
        """Greedy replies of ``model`` to ``prompts``, decoded without special tokens."""
        if self.batched:
            ids = batch.greedy_generate_batch(self.model, self.tokenizer, prompts, self.max_new_tokens)
        else:
            ids = [
                batch.greedy_generate_batch(self.model, self.tokenizer, [p], self.max_new_tokens)[0]
                for p in prompts
            ]
        return [self.tokenizer.decode(row, skip_special_tokens=True) for row in ids]

    def compute(self, question: str, answer: str) -> float:
        prompts = self.reply_prompts(question, answer)
        replies = self.generate_replies(list(prompts.values()))
        if len(replies) != len(prompts):
            raise RuntimeError(f"expected {len(prompts)} replies, got {len(replies)}")
        return self.reward_from_replies(question, answer, dict(zip(prompts, replies)))
