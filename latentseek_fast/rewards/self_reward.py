"""Self-reward: the solver model grades its own answer with four verifier prompts.

Verifiers (weights in brackets; ``docs/algorithm.md``, "Rewards"; the wording is ours):
``calculation`` (2) re-does every calculation, ``answer`` (1) judges the final answer,
``completeness`` (2) checks that a complete, explicit final answer is given, ``understanding`` (1)
checks that the question asked is the one answered. Each reply must end with ``Verdict:`` and
True or False; the reward is ``-(sum of the rejecting verifiers' weights) / 6``, and with
``format_rule`` an answer without ``\\boxed{...}`` loses 2 more before the division.

``SelfReward`` follows the ``ReplyReward`` protocol (``reply.py``): alone, ``compute`` decodes the
four replies in one batch (``decoding.batch``; exact, each row decodes as it would alone);
``seek`` does the same through ``generate_replies``, reporting their progress, and ``seek_many``
decodes them as rows of its own batch; both then call ``reward_from_replies``.
"""

from __future__ import annotations

import re

from .._util import check_int
from ..app.extract import last_boxed
from ..prompts import render_chat
from .reply import ReplyReward

VERDICT_MARKER = "Verdict:"
TOTAL_WEIGHT = 6
FORMAT_PENALTY = 2

_SYSTEM = (
    "You are a strict grader of math solutions. Check the solution as instructed, explain "
    "your check briefly, and end your reply with a last line that reads exactly "
    f"'{VERDICT_MARKER} True' or '{VERDICT_MARKER} False'."
)

# name -> (weight, instruction)
VERIFIERS: dict[str, tuple[int, str]] = {
    "calculation": (
        2,
        "Go through the solution and redo each calculation it makes yourself, one by "
        "one. Are all of its calculations arithmetically right?",
    ),
    "answer": (
        1,
        "Work out whether the final answer that the solution gives is the correct answer "
        "to the question. Is the final answer correct?",
    ),
    "completeness": (
        2,
        "Look at how the solution ends. Does it finish with one complete, explicitly "
        "stated final answer (not an unfinished calculation, a range of guesses, or "
        "no answer at all)?",
    ),
    "understanding": (
        1,
        "Read the question carefully. Does the solution understand what is asked and "
        "answer that exact question, rather than a different one?",
    ),
}

# Trailing stop/special tokens a decoded answer may end with.
_TRAILING_SPECIAL = re.compile(r"(?:\s*(?:<\|[^|<>\s]{1,40}\|>|</s>|<eos>|<end_of_turn>))+\s*$")


def parse_verdict(reply: str, marker: str = VERDICT_MARKER) -> bool:
    """True when the text after the LAST ``marker`` (case-insensitive, ``*`` removed) contains
    "true"; anything else (a "false", an empty verdict, "yes", no marker at all) rejects. This is
    the research code's rule: its first-word fallback only looks for "true"/"false" again, so it
    can never change the outcome."""
    text = reply.replace("*", "").lower()
    pos = text.rfind(marker.replace("*", "").lower())
    return pos >= 0 and "true" in text[pos + len(marker) :]


def strip_trailing_special(text: str, tokenizer=None) -> str:
    """``text`` without the stop/special tokens (and whitespace) at its end."""
    specials = [t for t in (getattr(tokenizer, "all_special_tokens", None) or []) if t]
    changed = True
    while changed:
        changed = False
        text = _TRAILING_SPECIAL.sub("", text).rstrip()
        for tok in specials:
            if text.endswith(tok):
                text = text[: -len(tok)].rstrip()
                changed = True
    return text


def has_boxed(answer: str) -> bool:
    """Whether ``answer`` contains a ``\\boxed{...}`` with balanced braces."""
    return re.search(r"\\boxed\s*\{", answer) is not None and last_boxed(answer) is not None


class SelfReward(ReplyReward):
    """The model as its own verifier. ``verdicts()`` gives the per-verifier verdicts; the last
    prompts, replies and verdicts are kept in ``last_prompts``/``last_replies``/``last_verdicts``
    (whoever decoded the replies)."""

    deterministic = True  # greedy verifier replies: the same answer gets the same verdicts

    def __init__(
        self, model, tokenizer, *, format_rule: bool = False, max_new_tokens: int = 4096, batched: bool = True
    ):
        check_int("max_new_tokens", max_new_tokens)
        self.model = model
        self.tokenizer = tokenizer
        self.format_rule = bool(format_rule)
        self.max_new_tokens = max_new_tokens
        self.batched = bool(batched)
        self.last_prompts: dict[str, str] = {}
        self.last_replies: dict[str, str] = {}
        self.last_verdicts: dict[str, bool] = {}

    def reply_prompts(self, question: str, answer: str) -> dict[str, str]:
        """The four verifier prompts (``VERIFIERS`` order), quoting ``answer`` without its
        trailing special tokens."""
        solution = strip_trailing_special(answer, self.tokenizer)
        prompts = {}
        for name, (_, instruction) in VERIFIERS.items():
            user = (
                f"Question:\n{question.strip()}\n\nSolution:\n{solution}\n\n{instruction}\n"
                f"Finish with '{VERDICT_MARKER} True' or '{VERDICT_MARKER} False'."
            )
            prompts[name] = render_chat(self.tokenizer, _SYSTEM, user)
        return prompts

    verifier_prompts = reply_prompts  # the name of earlier releases

    def reward_from_replies(self, question: str, answer: str, replies: dict[str, str]) -> float:
        """Parse each verifier's reply (``parse_verdict``) and score the verdicts."""
        missing = set(VERIFIERS) - set(replies)
        if missing:
            raise ValueError(f"replies lack the verifiers {sorted(missing)}; got {sorted(replies)}")
        self.last_prompts = self.reply_prompts(question, answer)
        self.last_replies = {name: replies[name] for name in VERIFIERS}
        self.last_verdicts = {name: parse_verdict(reply) for name, reply in self.last_replies.items()}
        return self.score_verdicts(self.last_verdicts, answer)

    def verdicts(self, question: str, answer: str) -> dict[str, bool]:
        """Each verifier's verdict (True = approves) on ``answer``."""
        self.compute(question, answer)
        return dict(self.last_verdicts)

    def score_verdicts(self, verdicts: dict[str, bool], answer: str) -> float:
        penalty = sum(VERIFIERS[name][0] for name, ok in verdicts.items() if not ok)
        if self.format_rule and not has_boxed(answer):
            penalty += FORMAT_PENALTY
        return -penalty / TOTAL_WEIGHT

    def __repr__(self) -> str:
        return (
            f"SelfReward(model={type(self.model).__name__}, format_rule={self.format_rule}, "
            f"max_new_tokens={self.max_new_tokens}, batched={self.batched})"
        )
