"""seek with drafts and exact reuse: the same results as plain seek, fewer forwards, fewer reward calls."""

import json

import pytest
import torch
from conftest import AdamGradients, LatentDecisions, assert_same_or_near_tie, make_tiny_model

from latentseek_fast import SeekConfig, seek
from latentseek_fast.decoding.greedy import greedy
from latentseek_fast.decoding.stops import answer_stop_ids

PROMPT = "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tiny64(tokenizer):
    """An untied random fp64 model that ends its answer to PROMPT with a stop token (11 tokens).

    Its LM-head row of ``<|im_end|>`` is made 1% longer than that of the 11th greedy token, so
    greedy decoding picks the stop token wherever it would pick that one.
    """
    model = make_tiny_model(dtype=torch.float64, seed=3, tie=False)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    truth = greedy(model, ids, stop=frozenset(), max_tokens=11).ids
    with torch.no_grad():
        model.lm_head.weight[2] = 1.01 * model.lm_head.weight[truth[10]]
    return model, tokenizer


def _seek(tiny, reward, **kw):
    model, tok = tiny
    kw = {"max_new_tokens": 24, "rho": 0.3, "lr": 0.5, "backend": "reference", "max_steps": 4, **kw}
    return seek(model, tok, "What is 2+3?", reward, prompt=PROMPT, **kw)


def _comparable(res):
    d = res.to_dict()
    for key in ("timings", "decode_stats", "reused"):
        d.pop(key)
    return d


class TextReward:
    """A deterministic reward (a function of the answer's text) that counts its calls."""

    deterministic = True

    def __init__(self):
        self.calls = 0

    def __call__(self, question, answer):
        self.calls += 1
        return -1.0 - (sum(map(ord, answer)) % 5) / 10


@pytest.mark.parametrize("tied", [False, True])
def test_seek_with_drafts_equals_seek_without(tiny64, tokenizer, tied):
    # The tied random model repeats its input token: everything it writes can be drafted.
    tiny = (make_tiny_model(dtype=torch.float64, seed=3), tokenizer) if tied else tiny64
    on = _seek(tiny, TextReward(), draft_tokens=8, max_steps=3)
    off = _seek(tiny, TextReward(), draft_tokens=0, max_steps=3)
    assert _comparable(on) == _comparable(off)
    assert on.decode_stats["tokens"] == off.decode_stats["tokens"] and off.decode_stats["drafted"] == 0
    if tied:
        assert on.decode_stats["accepted"] > 0
        assert on.decode_stats["forwards"] < off.decode_stats["forwards"]


class _Recorder:
    """Wraps ``LatentSteps.step`` to record each iteration's re-decoded tokens."""

    def __init__(self, monkeypatch):
        from latentseek_fast.engine.latent import LatentSteps

        self.tokens = []
        real = LatentSteps.step

        def recording(steps, *args, **kwargs):
            out = real(steps, *args, **kwargs)
            self.tokens.extend(tuple(t) for t, _ in out)
            return out

        monkeypatch.setattr(LatentSteps, "step", recording)


@pytest.mark.parametrize(
    "lr,max_new_tokens,drafts",
    [
        (1e-4, 24, 0),  # every iteration re-decodes the original tokens (ended by a stop token)
        (3e-3, 24, 8),  # some iterations do
        (1e-4, 8, 8),  # the original hit max_new_tokens: only later iterations can be reused
    ],
)
def test_exact_reuse_gives_the_same_result(tiny64, monkeypatch, lr, max_new_tokens, drafts):
    rec = _Recorder(monkeypatch)
    kw = {"lr": lr, "draft_tokens": drafts, "max_steps": 5, "max_new_tokens": max_new_tokens}
    off_reward = TextReward()
    off = _seek(tiny64, off_reward, reuse=False, **kw)
    seen_off = list(rec.tokens)
    rec.tokens.clear()
    on_reward = TextReward()
    on = _seek(tiny64, on_reward, reuse=True, **kw)
    assert _comparable(on) == _comparable(off) and rec.tokens == seen_off
    # The oracle count: an iteration repeats earlier re-decoded tokens, or the original answer's
    # own (which a continuation reproduces when the original ended with a stop token).
    L = on.update_length
    stopped = on.original_ids[-1] in answer_stop_ids(tiny64[1])
    assert stopped == (max_new_tokens == 24)
    earlier = {tuple(on.original_ids[:L])} if stopped else set()
    expected = 0
    for toks in seen_off:
        expected += toks in earlier
        earlier.add(toks)
    assert on.reused == expected > 0 and off.reused == 0
    assert on_reward.calls == off_reward.calls - expected  # the deterministic reward was reused
    if lr == 1e-4:
        assert expected == on.iterations - (0 if stopped else 1)


def test_reuse_rescores_a_reward_that_is_not_deterministic(tiny64):
    calls = []

    def reward(question, answer):
        calls.append(answer)
        return -1.0

    res = _seek(tiny64, reward, lr=1e-4, max_steps=4)
    assert res.reused >= 3 and len(calls) == 1 + res.iterations


@pytest.mark.parametrize("field,value", [("draft_tokens", -1), ("draft_tokens", 1.5), ("reuse", "yes")])
def test_config_checks_new_fields(field, value):
    with pytest.raises(ValueError, match=f"{field}={value!r}"):
        SeekConfig(**{field: value})
    with pytest.raises(ValueError, match="draft_policy='fast'.*'full', 'cost'"):
        SeekConfig(draft_policy="fast")


def test_cli_draft_tokens(tmp_path, tokenizer, capsys):
    from latentseek_fast.app import cli

    make_tiny_model(seed=3).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    base = ["run", "--model", str(tmp_path), "--problem", "What is 1+1?", "--gold", "2", "--json"]
    base += ["--max-new-tokens", "8", "--max-steps", "2", "--rho", "0.5", "--threads", "1"]
    answers = []
    for k in ("0", "8"):
        assert cli.main([*base, "--draft-tokens", k]) == 0
        out = json.loads(capsys.readouterr().out)
        answers.append((out["answer_ids"], out["rewards"]))
        assert out["decode_stats"]["drafted"] == 0 if k == "0" else out["decode_stats"]["drafted"] > 0
    assert answers[0] == answers[1]
    assert cli.main([*base, "--draft-tokens", "-1"]) == 2
    assert "error: --draft-tokens -1: expected an integer >= 0" in capsys.readouterr().err


@pytest.mark.slow
def test_drafts_on_the_embedded_model(smol):
    """Drafts on and off give the same answers, or part at a near-tie (``assert_same_or_near_tie``)."""
    from latentseek_fast.app.demo import demo_problems
    from latentseek_fast.prompts import build_prompt

    model, tok = smol
    problem = demo_problems()[1]  # greedy gets it wrong: iterations run
    # the reference backend's torch.optim.Adam lets AdamGradients see the first step's gradient
    kw = {"max_new_tokens": 64, "max_steps": 2, "rho": 0.2, "lr": 0.03, "backend": "reference"}
    on = seek(model, tok, problem, None, draft_tokens=8, **kw)
    with AdamGradients() as grads, LatentDecisions(model) as latent:
        off = seek(model, tok, problem, None, draft_tokens=0, **kw)
    assert on.decode_stats["accepted"] > 0
    prompt = tok(build_prompt(tok, problem.question, dataset=problem.dataset)).input_ids
    if assert_same_or_near_tie(model, prompt, off.original_ids, on.original_ids, what="original") is not None:
        return
    # drafted decoding's latents differ from plain decoding's by rounding: fragile gradient signs
    reach = grads.flip_reach(model.lm_head.weight, kw["lr"], kw["max_steps"])
    redecoded = (0, latent.gaps(off.update_length), reach)
    if assert_same_or_near_tie(model, prompt, off.answer_ids, on.answer_ids, redecoded=redecoded) is None:
        assert on.rewards == off.rewards and on.answer == off.answer
