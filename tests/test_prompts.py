"""Solver prompts: both styles, every data set, chat template and the no-template fallback."""

import pytest

from latentseek_fast import prompts
from latentseek_fast.app.extract import extract_answer
from latentseek_fast.prompts import STYLES, build_prompt, system_message


class TemplateTokenizer:
    """Just enough of a chat tokenizer: renders messages as ``[role] content`` lines."""

    chat_template = "stub"

    def __init__(self):
        self.calls = []

    def apply_chat_template(self, messages, tokenize=True, add_generation_prompt=False):
        self.calls.append((messages, tokenize, add_generation_prompt))
        text = "".join(f"[{m['role']}] {m['content']}\n" for m in messages)
        return text + ("[assistant] " if add_generation_prompt else "")


class PlainTokenizer:
    chat_template = None


# A reply to "What is 3 + 4?" written as each style's system message asks.
REPLIES = {
    "boxed": "3 + 4 = 7. The final answer is \\boxed{7}.",
    "json": '{"thought process": "3 + 4 = 7", "final answer": 7}',
}


@pytest.mark.parametrize("style", STYLES)
def test_each_style_asks_for_what_extraction_reads(style):
    """Every prompt style has a reply format that answer extraction reads in that style."""
    assert set(REPLIES) == set(STYLES)  # a new style needs its reply here
    assert extract_answer(REPLIES[style], "gsm8k", style) == "7"
    for key in ('"final answer"',) if style == "json" else ("\\boxed{",):
        assert key in system_message("gsm8k", style) and key in REPLIES[style]


@pytest.mark.parametrize("dataset", ["gsm8k", "math500", "aime"])
def test_system_messages(dataset):
    boxed, js = system_message(dataset, "boxed"), system_message(dataset, "json")
    assert "\\boxed{" in boxed and "step by step" in boxed
    assert '"thought process"' in js and '"final answer"' in js and "JSON" in js
    assert ("number only" in js) == (dataset == "gsm8k")


@pytest.mark.parametrize("style", STYLES)
def test_chat_template_prompt(style):
    tok = TemplateTokenizer()
    out = build_prompt(tok, "  What is 2 + 3?  ", "gsm8k", style)
    ((messages, tokenize, gen_prompt),) = tok.calls
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == system_message("gsm8k", style)
    assert messages[1]["content"] == "What is 2 + 3?"
    assert tokenize is False and gen_prompt is True
    assert out.endswith("[assistant] ")


def test_no_template_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(prompts, "_warned_no_template", False)
    with pytest.warns(UserWarning, match="no chat template"):
        first = build_prompt(PlainTokenizer(), "What is 2 + 3?")
    assert "What is 2 + 3?" in first and system_message() in first and first.rstrip().endswith("Answer:")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second call must not warn again
        assert build_prompt(PlainTokenizer(), "What is 2 + 3?", style="json").endswith("Answer:")


@pytest.mark.parametrize("question", ["", "   \n", None])
def test_empty_question_rejected(question):
    with pytest.raises(ValueError, match="question"):
        build_prompt(TemplateTokenizer(), question)


def test_bad_dataset_or_style():
    with pytest.raises(ValueError, match="gsm9k"):
        build_prompt(TemplateTokenizer(), "q", dataset="gsm9k")
    with pytest.raises(ValueError, match="xml"):
        build_prompt(TemplateTokenizer(), "q", style="xml")


@pytest.mark.slow
def test_real_chat_template(tokenizer):
    out = build_prompt(tokenizer, "What is 2 + 3?", "gsm8k", "boxed")
    assert out.startswith("<|im_start|>system\n" + system_message("gsm8k", "boxed") + "<|im_end|>")
    assert "<|im_start|>user\nWhat is 2 + 3?<|im_end|>" in out
    assert out.endswith("<|im_start|>assistant\n")
    assert "SmolLM" not in out  # our system message replaces the template's default one
