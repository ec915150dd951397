"""Final-answer extraction: the model's answer out of its reply, for GSM8K, MATH-500 and AIME.

- ``extract_answer``: the final answer of a reply, prompt style ``boxed`` (the last
  ``\\boxed{...}``) or ``json`` (the ``"final answer"`` value of a JSON object). GSM8K/AIME answers
  come back as bare numbers, MATH-500 answers as LaTeX for ``judge.is_correct``.
- ``last_boxed``, ``json_final_answer``, ``number_answer``: the pieces it is built from.

Judging an extracted answer against the ground truth lives in ``judge.py``; reading the ground
truth out of a data file lives in ``data.py``.
"""

from __future__ import annotations

import ast
import json
import re

from .._util import check_choice
from .data import check_dataset

ANSWER_STYLES = ("boxed", "json")

# Special tokens a decoded reply may carry (kept by the seek loop's decode).
_SPECIAL_TOKEN = re.compile(r"<\|[^|<>\s]{1,40}\|>|</s>|<s>|<eos>|<bos>|<pad>|<end_of_turn>|<start_of_turn>")
# A number: optional sign (only when the minus is not a subtraction, i.e. not glued to a word,
# digit or closing bracket), digits with optional thousands groups, optional decimals.
_NUMBER = re.compile(
    r"(?:(?<![\w)\]}])-)?(?<![\w.])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\d)|(?<![\w.])-?\.\d+"
)
_FRACTION = re.compile(r"\\[dt]?frac\s*\{\s*(-?[\d.,]+)\s*\}\s*\{\s*(-?[\d.,]+)\s*\}")
SIMPLE_FRACTION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*/\s*(-?\d+(?:\.\d+)?)\s*$")
THOUSANDS_ONLY = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")


def check_style(style: str) -> str:
    """``style`` if it is one of ``ANSWER_STYLES``, else a ValueError naming the allowed values."""
    return check_choice("style", style, ANSWER_STYLES)


def strip_special_tokens(text: str) -> str:
    """Remove special tokens such as ``<|im_end|>`` / ``</s>`` from a decoded reply."""
    return _SPECIAL_TOKEN.sub("", text)


def _closing_brace(text: str, i: int) -> int | None:
    """The index of the ``}`` that closes the ``{`` at ``text[i]``, or None when it is unclosed."""
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) with balanced braces, else None.

    ``\\boxed 5`` (no braces) gives ``5``. An unclosed last box is skipped for the previous one.
    """
    starts = [m for m in re.finditer(r"\\(?:boxed|fbox)\b", text)]
    for m in reversed(starts):
        i = m.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            j = _closing_brace(text, i)
            if j is not None:
                return text[i + 1 : j]
            continue  # unbalanced: try an earlier box
        tail = re.match(r"[^\s$]+", text[i:])
        if tail and i > m.end():
            return tail.group(0)
    return None


def _balanced_objects(text: str):
    """Yield every ``{...}`` span with balanced braces, outermost first in text order."""
    for start in (i for i, ch in enumerate(text) if ch == "{"):
        j = _closing_brace(text, start)
        if j is not None:
            yield start, text[start : j + 1]


def _fix_escapes(s: str) -> str:
    """Double backslashes that start LaTeX commands (``\\frac``, ``\\times``, ``\\(``) so that JSON
    does not read ``\\f`` / ``\\t`` / ``\\b`` as control characters or reject ``\\(``; real one-letter
    escapes (``\\n`` before a non-letter, ``\\"``, ``\\\\``, ``\\uXXXX``) are kept."""

    def repl(m: re.Match) -> str:
        tok = m.group(0)
        if tok == "\\\\":
            return tok
        nxt, after = m.group(1), m.group(2)
        if nxt in '"/':
            return tok
        if nxt == "u" and re.match(r"[0-9a-fA-F]", after or ""):
            return tok
        if nxt in "bfnrt" and not (after or "").isalpha():
            return tok
        return "\\\\" + tok[1:]

    return re.sub(r"\\\\|\\([^\\])(.?)", repl, s, flags=re.S)


def _json_loads_lenient(s: str):
    return json.loads(s, strict=False)  # raw newlines inside strings are common in model replies


def _norm_key(key) -> str:
    return re.sub(r"[\s_\-]+", " ", str(key)).strip().lower()


def _find_final(obj):
    """The ``final answer`` value in a parsed object (searched recursively), else a sentinel."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if _norm_key(k) in ("final answer", "finalanswer"):
                return v
        for v in obj.values():
            found = _find_final(v)
            if found is not _MISSING:
                return found
    return _MISSING


_MISSING = object()
_FINAL_RE = re.compile(
    r"""["']?final[\s_\-]*answer["']?\s*:\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|([^,}\n]+))""",
    re.I | re.S,
)


def json_final_answer(text: str) -> str | None:
    """The ``"final answer"`` value of the last JSON object in ``text`` that has one, as a string.

    Tolerates code fences, single-quoted (Python-style) objects, LaTeX backslashes and text
    after the object; when no object parses, a ``"final answer": value`` pair is read directly.
    """
    body = re.sub(r"```(?:json|JSON)?", "", text)
    best = None
    for start, span in _balanced_objects(body):
        value = _MISSING
        for candidate in (_fix_escapes(span), span):
            for loader in (_json_loads_lenient, ast.literal_eval):
                try:
                    value = _find_final(loader(candidate))
                except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
                    continue
                if value is not _MISSING:
                    break
            if value is not _MISSING:
                break
        if value is not _MISSING and (best is None or start >= best[0]):
            best = (start, value)
    if best is not None:
        return _value_to_text(best[1])
    matches = list(_FINAL_RE.finditer(body))
    if not matches:
        return None
    m = matches[-1]
    if m.group(1) is not None:
        return m.group(1).replace('\\"', '"')
    if m.group(2) is not None:
        return m.group(2).replace("\\'", "'")
    return m.group(3).strip()


def _value_to_text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _strip_wrappers(s: str) -> str:
    """Whitespace, ``$`` delimiters, ``\\(...\\)`` and a trailing period."""
    s = s.strip()
    for _ in range(3):
        before = s
        s = s.strip().strip("$").strip()
        if s.startswith("\\(") and s.endswith("\\)"):
            s = s[2:-2]
        if s.startswith("\\[") and s.endswith("\\]"):
            s = s[2:-2]
        s = s.rstrip(".").strip()
        if s == before:
            break
    return s


def unwrap_text_commands(s: str) -> str:
    return re.sub(r"\\(?:text|textbf|mathrm|mbox|mathbf)\s*\{([^{}]*)\}", r"\1", s)


def number_answer(s: str) -> str | None:
    """A numeric answer from a short string (a box's content, a JSON value or a whole reply):
    a plain fraction ``a/b`` or ``\\frac{a}{b}`` when that is all there is, else the last number;
    ``$``, commas, units and a trailing period removed. None when there is no number."""
    if s is None:
        return None
    s = unwrap_text_commands(strip_special_tokens(s))
    s = s.replace("{,}", ",").replace("\\$", "$").replace("\\%", "%").replace("\\!", "")
    s = _FRACTION.sub(r"\1/\2", s)
    core = _strip_wrappers(s).replace("$", "").replace("%", "").strip()
    frac = SIMPLE_FRACTION.match(core.replace(",", ""))
    if frac:
        return f"{frac.group(1)}/{frac.group(2)}"
    numbers = _NUMBER.findall(s)
    if not numbers:
        return None
    return numbers[-1].replace(",", "")


def clean_math_answer(s: str) -> str:
    """Light clean-up of a MATH answer; math-verify does the rest."""
    s = _strip_wrappers(strip_special_tokens(s))
    s = s.replace("{,}", "")
    if THOUSANDS_ONLY.match(s):
        s = s.replace(",", "")
    # A unit in \text{...} after a value: "5\text{ cm}" -> "5" (a lone "\text{(C)}" stays).
    s = re.sub(r"(?<=[\d}])\s*\\(?:text|mbox|mathrm)\{\s*[A-Za-z ]+\}(?:\^\{?\d\}?)?\s*$", "", s)
    return s.strip()


def extract_answer(text: str, dataset: str, style: str = "boxed") -> str | None:
    """The final answer in ``text``, or None when none is found.

    ``style="boxed"``: the last balanced ``\\boxed{...}``; for GSM8K and AIME the number inside it,
    falling back to the last number in the text. ``style="json"``: the ``"final answer"`` value
    of a JSON object (code fences, single quotes, trailing text tolerated), falling back to the
    boxed rule. GSM8K/AIME answers come back as bare numbers (``"1450"``, ``"-3"``, ``"2.5"``,
    ``"3/4"``); MATH-500 answers as LaTeX for math-verify.
    """
    check_dataset(dataset)
    check_style(style)
    if text is None:
        return None
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    text = strip_special_tokens(text)

    if style == "json":
        value = json_final_answer(text)
        if value is not None:
            boxed = last_boxed(value)
            value = boxed if boxed is not None else value
            if dataset == "math500":
                cleaned = clean_math_answer(value)
                return cleaned or None
            return number_answer(value)

    boxed = last_boxed(text)
    if dataset == "math500":
        if boxed is None:
            return None
        cleaned = clean_math_answer(boxed)
        return cleaned or None
    if boxed is not None:
        found = number_answer(boxed)
        if found is not None:
            return found
    return number_answer(text)
