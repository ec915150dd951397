"""Solver prompts: a system message, the question as the user turn, then the assistant opener.

Two styles per data set (``docs/algorithm.md``, "Prompts, data and scoring"): ``boxed`` (reason
step by step, final answer in ``\\boxed{}``) and ``json`` (a JSON object with "thought process"
and "final answer"). The wording is ours.
"""

from __future__ import annotations

import warnings

from .app.data import check_dataset
from .app.extract import ANSWER_STYLES

STYLES = ANSWER_STYLES  # ("boxed", "json")

_BOXED = (
    "You are a careful math tutor. Solve the problem step by step, writing out every calculation "
    "you make. When you are done, state the final answer once, inside \\boxed{{}}, for example "
    "\\boxed{{{example}}}.{extra}"
)
_JSON = (
    "You are a careful math tutor. Answer with one JSON object and nothing else. It must have "
    'exactly two keys: "thought process", a string with your step-by-step reasoning, and '
    '"final answer", {final}.'
)
_EXTRA = {
    "gsm8k": " The final answer is a number: leave out units and thousands separators.",
    "math500": " Write the final answer in LaTeX, simplified as far as possible.",
    "aime": " The final answer is an integer from 0 to 999.",
}
_EXAMPLE = {"gsm8k": "42", "math500": "\\frac{3}{4}", "aime": "117"}
_FINAL = {
    "gsm8k": "the answer as a number only (no units, no words, no thousands separators)",
    "math500": "the answer alone as a LaTeX expression, without \\boxed",
    "aime": "the answer as an integer from 0 to 999",
}

_warned_no_template = False


def system_message(dataset: str = "gsm8k", style: str = "boxed") -> str:
    """The solver's system message for ``dataset`` and ``style``."""
    check_dataset(dataset)
    if style not in STYLES:
        raise ValueError(f"style={style!r}: allowed values are {STYLES}")
    if style == "boxed":
        return _BOXED.format(example=_EXAMPLE[dataset], extra=_EXTRA[dataset])
    return _JSON.format(final=_FINAL[dataset])


def has_chat_template(tokenizer) -> bool:
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def render_chat(tokenizer, system: str | None, user: str) -> str:
    """``system`` + ``user`` messages through the tokenizer's chat template with the assistant
    opener appended; without a template, a plain-text layout (warned about once per process)."""
    global _warned_no_template
    if has_chat_template(tokenizer):
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user}
        ]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not _warned_no_template:
        _warned_no_template = True
        warnings.warn(
            f"tokenizer {type(tokenizer).__name__} has no chat template; using a plain-text prompt "
            "(instruction, question, 'Answer:'), which instruct models may follow less well",
            stacklevel=3,
        )
    head = f"{system}\n\n" if system else ""
    return f"{head}Question: {user}\n\nAnswer:"


def build_prompt(tokenizer, question: str, dataset: str = "gsm8k", style: str = "boxed") -> str:
    """The templated solver prompt for ``question`` (ends with the assistant-turn opener)."""
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"question={question!r}: expected non-empty text")
    return render_chat(tokenizer, system_message(dataset, style), question.strip())
