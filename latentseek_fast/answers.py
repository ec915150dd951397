"""Final-answer extraction and judging for GSM8K, MATH-500 and AIME.

- ``gsm8k_gold``: the ground truth of a GSM8K ``answer`` field (the text after ``####``).
- ``extract_answer``: the model's final answer from its reply, prompt style ``boxed`` (the last
  ``\\boxed{...}``) or ``json`` (the ``"final answer"`` value of a JSON object).
- ``is_correct``: numeric equality for GSM8K (``1,450`` == ``1450``, ``72.0`` == ``72``), integer
  equality for AIME, math-verify (gold first, both sides parsed, bounded time) plus a normalised
  string comparison for MATH-500.

The research code compared GSM8K answers as raw strings, so its 14 test answers with thousands
separators could never be judged correct (NOTES.md); these functions compare values instead.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import threading
from fractions import Fraction

DATASETS = ("gsm8k", "math500", "aime")
ANSWER_STYLES = ("boxed", "json")
MATH_VERIFY_TIMEOUT_S = 5

# Special tokens a decoded reply may carry (kept by the seek loop's decode).
_SPECIAL_TOKEN = re.compile(r"<\|[^|<>\s]{1,40}\|>|</s>|<s>|<eos>|<bos>|<pad>|<end_of_turn>|<start_of_turn>")
# A number: optional sign (only when the minus is not a subtraction, i.e. not glued to a word,
# digit or closing bracket), digits with optional thousands groups, optional decimals.
_NUMBER = re.compile(
    r"(?:(?<![\w)\]}])-)?(?<![\w.])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\d)|(?<![\w.])-?\.\d+"
)
_FRACTION = re.compile(r"\\[dt]?frac\s*\{\s*(-?[\d.,]+)\s*\}\s*\{\s*(-?[\d.,]+)\s*\}")
_SIMPLE_FRACTION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*/\s*(-?\d+(?:\.\d+)?)\s*$")
_THOUSANDS_ONLY = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")


def check_dataset(dataset: str) -> str:
    if dataset not in DATASETS:
        raise ValueError(f"dataset={dataset!r}: allowed values are {DATASETS}")
    return dataset


def check_style(style: str) -> str:
    if style not in ANSWER_STYLES:
        raise ValueError(f"style={style!r}: allowed values are {ANSWER_STYLES}")
    return style


def gsm8k_gold(answer_field: str) -> str:
    """The ground truth of a GSM8K answer: the text after the last ``####``, commas stripped.

    A field without ``####`` is taken as the bare answer (handy for hand-written files).
    """
    if not isinstance(answer_field, str):
        raise ValueError(f"GSM8K answer field {answer_field!r}: expected a string")
    text = answer_field.rsplit("####", 1)[-1]
    return text.strip().replace(",", "").rstrip(".").strip()


def strip_special_tokens(text: str) -> str:
    """Remove special tokens such as ``<|im_end|>`` / ``</s>`` from a decoded reply."""
    return _SPECIAL_TOKEN.sub("", text)


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
            depth = 0
            for j in range(i, len(text)):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[i + 1 : j]
            continue  # unbalanced: try an earlier box
        tail = re.match(r"[^\s$]+", text[i:])
        if tail and i > m.end():
            return tail.group(0)
    return None


def _balanced_objects(text: str):
    """Yield every ``{...}`` span with balanced braces, outermost first in text order."""
    for start in (i for i, ch in enumerate(text) if ch == "{"):
        depth = 0
        for j in range(start, len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    yield start, text[start : j + 1]
                    break


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


def _text_commands_to_plain(s: str) -> str:
    return re.sub(r"\\(?:text|textbf|mathrm|mbox|mathbf)\s*\{([^{}]*)\}", r"\1", s)


def number_answer(s: str) -> str | None:
    """A numeric answer from a short string (a box's content, a JSON value or a whole reply):
    a plain fraction ``a/b`` or ``\\frac{a}{b}`` when that is all there is, else the last number;
    ``$``, commas, units and a trailing period removed. None when there is no number."""
    if s is None:
        return None
    s = _text_commands_to_plain(strip_special_tokens(s))
    s = s.replace("{,}", ",").replace("\\$", "$").replace("\\%", "%").replace("\\!", "")
    s = _FRACTION.sub(r"\1/\2", s)
    core = _strip_wrappers(s).replace("$", "").replace("%", "").strip()
    frac = _SIMPLE_FRACTION.match(core.replace(",", ""))
    if frac:
        return f"{frac.group(1)}/{frac.group(2)}"
    numbers = _NUMBER.findall(s)
    if not numbers:
        return None
    return numbers[-1].replace(",", "")


def _clean_math(s: str) -> str:
    """Light clean-up of a MATH answer; math-verify does the rest."""
    s = _strip_wrappers(strip_special_tokens(s))
    s = s.replace("{,}", "")
    if _THOUSANDS_ONLY.match(s):
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
                cleaned = _clean_math(value)
                return cleaned or None
            return number_answer(value)

    boxed = last_boxed(text)
    if dataset == "math500":
        if boxed is None:
            return None
        cleaned = _clean_math(boxed)
        return cleaned or None
    if boxed is not None:
        found = number_answer(boxed)
        if found is not None:
            return found
    return number_answer(text)


# ---------------------------------------------------------------------------- judging


def _to_fraction(s) -> Fraction | None:
    """``"1,450"``, ``"$72.0"``, ``"-3"``, ``"3/4"``, ``"50%"`` -> an exact Fraction; else None."""
    if s is None:
        return None
    if isinstance(s, bool):
        return None
    if isinstance(s, (int, float)):
        try:
            return Fraction(s)
        except (ValueError, OverflowError):
            return None
    t = str(s).strip().replace("\\$", "").replace("$", "").replace(",", "").replace("\\%", "%")
    t = t.rstrip(".").rstrip("%").strip()
    frac = _SIMPLE_FRACTION.match(t)
    try:
        if frac:
            den = Fraction(frac.group(2))
            return Fraction(frac.group(1)) / den if den != 0 else None
        if re.fullmatch(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", t):
            return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def normalize_math_string(s: str) -> str:
    """A canonical string for a LaTeX answer: no spaces, ``$``, ``\\left``/``\\right``, spacing
    commands, ``\\text{}`` wrappers, degree marks or ``\\%``; ``\\dfrac``/``\\tfrac`` -> ``\\frac``."""
    s = _clean_math(str(s))
    s = _text_commands_to_plain(s)
    for a, b in (
        ("\\left", ""),
        ("\\right", ""),
        ("\\!", ""),
        ("\\,", ""),
        ("\\;", ""),
        ("\\:", ""),
        ("\\dfrac", "\\frac"),
        ("\\tfrac", "\\frac"),
        ("^\\circ", ""),
        ("^{\\circ}", ""),
        ("\\%", ""),
        ("%", ""),
        ("\\$", ""),
        ("$", ""),
    ):
        s = s.replace(a, b)
    s = re.sub(r"\s+", "", s)
    s = s.rstrip(".")
    if _THOUSANDS_ONLY.match(s):
        s = s.replace(",", "")
    return s


class _DropTimeoutNotice(logging.Filter):
    """math-verify logs a warning on every call made with its (signal-based) timeouts off; off
    is the only option outside the main thread, and ``math_equal`` bounds the time itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


_notice_filter_installed = False


def _install_notice_filter() -> None:
    global _notice_filter_installed
    if not _notice_filter_installed:
        for name in ("math_verify.parser", "math_verify.grader"):
            logging.getLogger(name).addFilter(_DropTimeoutNotice())
        _notice_filter_installed = True


def _math_verify_equal(gold: str, pred: str, *, in_main_thread: bool) -> bool:
    from math_verify import parse, verify

    if in_main_thread:  # math-verify bounds its own time with signal.alarm
        g = parse(f"\\boxed{{{gold}}}", parsing_timeout=MATH_VERIFY_TIMEOUT_S)
        p = parse(f"\\boxed{{{pred}}}", parsing_timeout=MATH_VERIFY_TIMEOUT_S)
        return bool(g and p and verify(g, p, timeout_seconds=MATH_VERIFY_TIMEOUT_S))
    g = parse(f"\\boxed{{{gold}}}", parsing_timeout=None)
    p = parse(f"\\boxed{{{pred}}}", parsing_timeout=None)
    return bool(g and p and verify(g, p, timeout_seconds=None))


def math_equal(pred: str, gold: str, timeout_s: float = MATH_VERIFY_TIMEOUT_S) -> bool:
    """MATH answers equal by math-verify (gold first, both parsed) or by normalised string.

    In the main thread math-verify's own ``signal.alarm`` timeouts apply; elsewhere (signals
    only work in the main thread) the check runs in a daemon worker and is abandoned after
    ``timeout_s`` seconds, counting as not equal unless the strings match.
    """
    if normalize_math_string(pred) == normalize_math_string(gold):
        return True
    try:
        if threading.current_thread() is threading.main_thread():
            return _math_verify_equal(gold, pred, in_main_thread=True)
        _install_notice_filter()
        result: list[bool] = []

        def work():
            try:
                result.append(_math_verify_equal(gold, pred, in_main_thread=False))
            except Exception:  # any parser failure means "not shown equal"
                result.append(False)

        worker = threading.Thread(target=work, daemon=True, name="math-verify")
        worker.start()
        worker.join(timeout_s)
        return bool(result and result[0])
    except Exception:  # math-verify raising (or timing out) is "not shown equal"
        return False


def is_correct(pred: str | None, gold: str, dataset: str) -> bool:
    """Whether the extracted answer ``pred`` matches the ground truth ``gold`` for ``dataset``."""
    check_dataset(dataset)
    if pred is None or gold is None:
        return False
    pred, gold = str(pred).strip(), str(gold).strip()
    if not pred:
        return False
    if dataset == "gsm8k":
        p, g = _to_fraction(pred), _to_fraction(gold)
        if p is None or g is None:
            return normalize_math_string(pred) == normalize_math_string(gold) != ""
        return p == g
    if dataset == "aime":
        p, g = _to_fraction(pred), _to_fraction(gold)
        return p is not None and g is not None and p.denominator == 1 and g.denominator == 1 and p == g
    return math_equal(pred, gold)
