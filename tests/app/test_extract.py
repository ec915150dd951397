"""Answer extraction on hand-written replies (judging is in test_judge.py)."""

import pytest

from latentseek_fast.app.extract import extract_answer, last_boxed


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so \boxed{18}.", "18"),
        (r"\boxed{\frac{1}{2}} then \boxed{3}", "3"),
        (r"\boxed{a_{1}+\frac{b}{c}} end", r"a_{1}+\frac{b}{c}"),
        (r"\boxed{\left\{ 1, 2 \right\}}", r"\left\{ 1, 2 \right\}"),
        (r"\boxed {5}", "5"),
        (r"\boxed{12} and an unclosed \boxed{3", "12"),
        ("no box", None),
    ],
)
def test_last_boxed_balances_braces(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"3 + 4 = 7, so the answer is \boxed{7}.<|im_end|>", "7"),
        (r"\boxed{\$1,450}", "1450"),
        (r"The answer is \boxed{18 \text{ dollars}}.", "18"),
        (r"\boxed{\frac{3}{4}}", "3/4"),
        (r"\boxed{-12}", "-12"),
        (r"\boxed{2.50}", "2.50"),
        (r"\boxed{x = 5}", "5"),
        ("She makes 9 * 2 = $18 every day.", "18"),  # no box: last number
        ("In total 1,234,567 people.</s>", "1234567"),
        ("The temperature fell to -5 degrees.", "-5"),
        ("16-3 = 13", "13"),
        ("It costs $0.75.", "0.75"),
        ("I do not know.", None),
        ("", None),
    ],
)
def test_extract_gsm8k_boxed(text, expected):
    assert extract_answer(text, "gsm8k") == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"So $x = \boxed{\frac{\sqrt{3}}{2}}$.", r"\frac{\sqrt{3}}{2}"),
        (r"\boxed{(1,2)}", "(1,2)"),
        (r"\boxed{1,000}", "1000"),
        (r"\boxed{5\text{ cm}}", "5"),
        (r"\boxed{\text{(C)}}", r"\text{(C)}"),
        (r"\boxed{$\pi$}.<|endoftext|>", r"\pi"),
        ("the answer is 5", None),  # MATH needs a box
    ],
)
def test_extract_math500_boxed(text, expected):
    assert extract_answer(text, "math500") == expected


@pytest.mark.parametrize(
    "text, dataset, expected",
    [
        ('{"thought process": "9 * 2 = 18", "final answer": "18"}', "gsm8k", "18"),
        ('```json\n{"thought process": "x", "final answer": 1450}\n```<|im_end|>', "gsm8k", "1450"),
        (
            "{'thought process': 'Janet's eggs: 9*2', 'final answer': '$1,450'} Hope this helps!",
            "gsm8k",
            "1450",
        ),
        ('{"thought process": "line one\nline two", "final answer": 72.0}', "gsm8k", "72"),
        ('{"Thought_Process": "x", "Final_Answer": "7 apples"}', "gsm8k", "7"),
        ('{"thought process": "x", "final answer": "\\frac{1}{2}"}', "math500", r"\frac{1}{2}"),
        ('{"thought process": "a \\\\times b", "final answer": "\\\\sqrt{2}"}', "math500", r"\sqrt{2}"),
        ('{"thought process": "x", "final answer": "\\boxed{3\\pi}"}', "math500", r"3\pi"),
        ('"final answer": "42", and then the reply broke off {', "gsm8k", "42"),
        (r"no JSON here, but \boxed{9}", "gsm8k", "9"),  # fallback: boxed
        ("no JSON, no box, just 3 then 4", "gsm8k", "4"),  # fallback: last number
        ('{"thought process": "x", "final answer": "033"}', "aime", "033"),
    ],
)
def test_extract_json_style(text, dataset, expected):
    assert extract_answer(text, dataset, style="json") == expected


def test_extract_validates_arguments():
    with pytest.raises(ValueError, match="gsm9k"):
        extract_answer("1", "gsm9k")
    with pytest.raises(ValueError, match="xml"):
        extract_answer("1", "gsm8k", style="xml")
    assert extract_answer(None, "gsm8k") is None
