"""Judging an extracted answer against the ground truth, per data set.

``judge_reply``: a reply's extracted answer and whether it is correct (what results rows record).
``is_correct``: numeric equality for GSM8K (``1,450`` == ``1450``, ``72.0`` == ``72``), integer
equality for AIME, and for MATH-500 a normalised string comparison, then math-verify (gold
first, both sides parsed, bounded time).

The research code compared GSM8K answers as raw strings, so its 14 test answers with thousands
separators could never be judged correct; these functions compare values instead.
"""

from __future__ import annotations

import logging
import re
import threading
from fractions import Fraction

from .data import check_dataset
from .extract import SIMPLE_FRACTION, THOUSANDS_ONLY, clean_math_answer, extract_answer, unwrap_text_commands

MATH_VERIFY_TIMEOUT_S = 5


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
    frac = SIMPLE_FRACTION.match(t)
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
    s = clean_math_answer(str(s))
    s = unwrap_text_commands(s)
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
    if THOUSANDS_ONLY.match(s):
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
    from math_verify import parse, verify  # heavy (sympy): only for MATH answers

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


def judge_reply(text: str, gold: str | None, dataset: str, style: str = "boxed") -> tuple[str | None, bool]:
    """``(answer, correct)`` of a reply: the final answer ``extract_answer`` finds in ``text``,
    and whether it matches ``gold`` (``False`` when there is no gold)."""
    pred = extract_answer(text, dataset, style)
    return pred, is_correct(pred, gold, dataset)
