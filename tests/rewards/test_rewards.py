"""Rewards: value validation, PSRM, self-reward verdicts and arithmetic (the verifiers' batched
generation is tested in tests/decoding/test_batch.py)."""

import math

import numpy as np
import pytest
import torch

from latentseek_fast.decoding import batch
from latentseek_fast.rewards import PSRM, Reward, RewardError, SelfReward, as_reward
from latentseek_fast.rewards.self_reward import VERDICT_MARKER, VERIFIERS, parse_verdict

# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        -math.inf,
        None,
        "abc",
        "0.5",
        True,
        np.bool_(False),
        torch.tensor([0.0, 1.0]),
        torch.tensor(True),
        [0.0],
        object(),
    ],
)
def test_bad_reward_values_raise_naming_value_and_object(value):
    def my_reward(q, a):
        return value

    with pytest.raises(RewardError, match="my_reward") as info:
        as_reward(my_reward)("q", "a")
    assert repr(value)[:20] in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "value",
    [
        0,
        -1,
        0.5,
        np.float32(-0.25),
        np.int64(-1),
        np.array(-0.5),
        torch.tensor(-0.5),
        torch.tensor(-1, dtype=torch.int64),
    ],
)
def test_numbers_come_back_as_python_float(value):
    out = as_reward(lambda q, a: value)("q", "a")
    assert type(out) is float and out == float(value)


def test_as_reward_accepts_get_reward_objects_and_rewards():
    class ResearchStyle:
        def get_reward(self, question, solution):
            return -1 if "wrong" in solution else np.float64(0.0)

    r = as_reward(ResearchStyle())
    assert isinstance(r, Reward) and r("q", "wrong") == -1.0 and r.get_reward("q", "ok") == 0.0

    class Bad:
        def get_reward(self, question, solution):
            return float("nan")

    with pytest.raises(RewardError, match="Bad"):
        as_reward(Bad())("q", "a")

    class Mine(Reward):
        def compute(self, question, answer):
            return len(answer)

    mine = Mine()
    assert as_reward(mine) is mine and mine.get_reward("q", "abc") == 3.0
    with pytest.raises(TypeError, match="get_reward"):
        as_reward(42)


# ---------------------------------------------------------------------------- PSRM


def test_psrm():
    r = PSRM("1450")
    assert r("q", r"So \boxed{1,450}.<|im_end|>") == 0.0
    assert r("q", r"So \boxed{1,451}.") == -1.0
    assert r("q", "no answer at all") == -1.0
    assert PSRM("18", style="json")("q", '{"thought process": "9*2", "final answer": "18"}') == 0.0
    assert PSRM(r"\frac{1}{2}", dataset="math500")("q", r"\boxed{0.5}") == 0.0
    assert PSRM("33", dataset="aime").get_reward("q", r"\boxed{033}") == 0.0
    assert type(r("q", r"\boxed{1450}")) is float
    with pytest.raises(ValueError, match="gsm9k"):
        PSRM("1", dataset="gsm9k")
    with pytest.raises(ValueError, match="gold"):
        PSRM(None)


# ---------------------------------------------------------------------------- self-reward


@pytest.mark.parametrize(
    "reply, approved",
    [
        ("All steps check out.\nVerdict: True", True),
        ("Verdict: False", False),
        ("**Verdict:** **True**", True),
        ("verdict: TRUE.", True),
        ("VERDICT: false", False),
        ("Verdict: True at first... on second thought, Verdict: False", False),
        ("Verdict: False. Wait, recomputing: Verdict: True", True),
        ("Verdict: yes", False),  # only "true"/"false" count, as in the research code
        ("Verdict: Correct, all good", False),
        ("Verdict: no", False),
        ("Verdict: maybe", False),
        ("Verdict:", False),
        ("The answer is True", False),  # no marker
        ("", False),
    ],
)
def test_parse_verdict(reply, approved):
    assert parse_verdict(reply) is approved


class FakeTokenizer:
    """Chat-template and decode stubs; ``decode([i])`` returns the i-th scripted reply."""

    chat_template = "stub"
    all_special_tokens = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]

    def __init__(self, replies):
        self.replies = replies

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def decode(self, ids, skip_special_tokens=False):
        return self.replies[ids[0]]


NAMES = list(VERIFIERS)  # calculation, answer, completeness, understanding


def _scripted(monkeypatch, verdicts: dict[str, bool]):
    """A SelfReward whose generator returns 'Verdict: True/False' per verifier, recording calls."""
    replies = [f"checked.\n{VERDICT_MARKER} {verdicts[n]}" for n in NAMES]
    calls = []

    def fake_generate(model, tokenizer, prompts, max_new_tokens, on_progress=None, gaps=None):
        calls.append((list(prompts), max_new_tokens))
        return [[NAMES.index(next(n for n in NAMES if VERIFIERS[n][1] in p))] for p in prompts]

    monkeypatch.setattr(batch, "greedy_generate_batch", fake_generate)
    return FakeTokenizer(replies), calls


@pytest.mark.parametrize(
    "rejected, expected",
    [
        ((), 0.0),
        (("calculation",), -2 / 6),
        (("answer",), -1 / 6),
        (("completeness",), -2 / 6),
        (("understanding",), -1 / 6),
        (("calculation", "understanding"), -3 / 6),
        (tuple(NAMES), -1.0),
    ],
)
def test_self_reward_arithmetic(monkeypatch, rejected, expected):
    tok, calls = _scripted(monkeypatch, {n: n not in rejected for n in NAMES})
    reward = SelfReward(None, tok, max_new_tokens=7)
    answer = r"3 + 4 = 7, so \boxed{7}<|im_end|>"
    assert reward("How many apples?", answer) == pytest.approx(expected)
    assert reward.last_verdicts == {n: n not in rejected for n in NAMES}
    assert set(reward.last_replies) == set(NAMES)
    ((prompts, max_new),) = calls  # one batch with the four verifiers
    assert max_new == 7 and len(prompts) == 4
    for p in prompts:
        assert "How many apples?" in p and r"3 + 4 = 7, so \boxed{7}<" not in p  # stop token stripped
        assert r"\boxed{7}" in p and VERDICT_MARKER in p


@pytest.mark.parametrize(
    "answer, rejected, expected",
    [
        (r"so \boxed{7}", (), 0.0),
        ("so the answer is 7", (), -2 / 6),
        ("so the answer is 7", ("calculation",), -4 / 6),
        ("so the answer is 7", tuple(NAMES), -8 / 6),
        (r"so \boxed{7", (), -2 / 6),  # unbalanced box does not count
    ],
)
def test_self_reward_format_rule(monkeypatch, answer, rejected, expected):
    tok, _ = _scripted(monkeypatch, {n: n not in rejected for n in NAMES})
    assert SelfReward(None, tok, format_rule=True)("q", answer) == pytest.approx(expected)
    if not rejected:  # without the rule no penalty
        assert SelfReward(None, tok)("q", answer) == 0.0


def test_make_reward_caps_verifier_replies(monkeypatch):
    """``verifier_tokens`` (the CLI's ``--verifier-tokens``) reaches the verifiers' generate call."""
    from latentseek_fast.app.cli import build_parser
    from latentseek_fast.app.cli.load import reward_for
    from latentseek_fast.app.data import Problem
    from latentseek_fast.rewards import make_reward

    tok, calls = _scripted(monkeypatch, {n: True for n in NAMES})
    assert make_reward("self", None, tok, verifier_tokens=9)("q", "a") == 0.0
    assert make_reward("self", None, tok).max_new_tokens == 4096  # the paper's cap by default
    assert isinstance(make_reward("psrm", gold="3", verifier_tokens=9), PSRM)  # PSRM has no verifiers
    argv = ["eval", "--data", "d.jsonl", "--reward", "self", "--verifier-tokens", "33"]
    problem = Problem(id="0", question="q", gold="3", dataset="gsm8k")
    reward = reward_for(build_parser().parse_args(argv), None, tok, problem)
    assert reward("q", "a") == 0.0
    assert [max_new for _, max_new in calls] == [9, 33]
    default = reward_for(build_parser().parse_args(argv[:-2]), None, tok, problem)
    assert default.max_new_tokens == 4096


def test_self_reward_unbatched_runs_one_prompt_at_a_time(monkeypatch):
    tok, calls = _scripted(monkeypatch, {n: n != "answer" for n in NAMES})
    reward = SelfReward(None, tok, batched=False)
    assert reward.verdicts("q", "a") == {n: n != "answer" for n in NAMES}
    assert [len(p) for p, _ in calls] == [1, 1, 1, 1]
    assert reward.max_new_tokens == 4096
    with pytest.raises(ValueError, match="max_new_tokens"):
        SelfReward(None, tok, max_new_tokens=0)


@pytest.mark.slow
def test_real_model_self_reward_runs(smol):
    model, tok = smol
    reward = SelfReward(model, tok, max_new_tokens=3)
    r = reward("What is 2 + 3?", r"2 + 3 = 5, so \boxed{5}<|im_end|>")
    assert type(r) is float and r in {-k / 6 for k in range(7)}
    assert set(reward.last_replies) == set(NAMES)
    assert all(
        "<|im_end|>" not in p.split("<|im_start|>user")[1].split("<|im_end|>")[0]
        for p in reward.last_prompts.values()
    )
