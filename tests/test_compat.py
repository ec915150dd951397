"""The drop-in functions against our full-recompute re-implementation of the research code."""

import pytest
import torch
from conftest import (
    AdamGradients,
    LatentDecisions,
    SmallTokenizer,
    assert_same_or_near_tie,
    make_tiny_model,
    small_model,
)

from latentseek_fast import baseline, compat
from latentseek_fast.decoding.greedy import greedy

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"


class ScriptedRM:
    """A research-style reward model: ``get_reward(question, solution)``, scripted values."""

    def __init__(self, *values):
        self.values, self.calls = list(values), 0

    def get_reward(self, question, solution):
        self.calls += 1
        return self.values[min(self.calls - 1, len(self.values) - 1)]


@pytest.fixture(scope="module")
def prompt(tokenizer):
    return tokenizer.apply_chat_template(
        [
            {"role": "system", "content": "Answer with a number in \\boxed{}."},
            {"role": "user", "content": QUESTION},
        ],
        tokenize=False,
        add_generation_prompt=True,
    )


@pytest.fixture(scope="module")
def originals(smol, prompt):
    model, tok = smol
    return compat.original_generation(prompt, model, tok, "cpu"), baseline.original_generation(
        prompt, model, tok, "cpu"
    )


def _same_answer(model, tok, prompt, ref, got, latent, grads, kw, what):
    """``got`` equals the research-way result ``ref`` (both ``optimized_generation`` tuples), or their
    answers part at a near-tie (the re-decoded latents' own, or the continuation's): then only what
    precedes it is compared."""
    L = ref[4]
    reach = grads.flip_reach(model.lm_head.weight, kw["lr"], kw["max_num_steps"])
    k = assert_same_or_near_tie(
        model,
        tok(prompt).input_ids,
        tok.encode(ref[0]),
        tok.encode(got[0]),
        redecoded=(kw.get("start_index", 0), latent.gaps(L), reach),
        what=what,
    )
    if k is None:
        assert got == ref
    else:  # the rewards are scripted: the same whatever the answer
        assert got[1:3] == ref[1:3] and got[4] == L


@pytest.mark.slow
def test_original_generation_formats_and_parity(smol, prompt, originals):
    """KV-cached greedy decoding equals the baseline's full recompute, or parts from it at a near-tie."""
    model, tok = smol
    (answer, states, ids), (b_answer, b_states, b_ids) = originals
    P = len(tok(prompt).input_ids)
    k = assert_same_or_near_tie(model, ids[0, :P].tolist(), b_ids[0, P:].tolist(), ids[0, P:].tolist())
    if k is None:
        assert answer == b_answer and torch.equal(ids, b_ids)
        assert answer.endswith("<|im_end|>")
    assert ids.shape == (1, P + len(states) - 1)
    assert all(s.shape == (1, model.config.hidden_size) for s in states)
    # states[i] produced token i from the shared prefix while i <= k
    shared = len(states) if k is None else k + 1
    for s, b in zip(states[:shared], b_states[:shared]):
        torch.testing.assert_close(s, b, rtol=1e-3, atol=2e-4)


@pytest.mark.slow
@pytest.mark.parametrize("start_index", [0, 2])
def test_optimized_generation_matches_research_way(smol, prompt, originals, start_index):
    model, tok = smol
    answer, states, ids = originals[0]
    kw = dict(start_index=start_index, max_num_steps=2, lr=0.05, max_new_tokens=12, k=0.3)
    with AdamGradients() as grads, LatentDecisions(model) as latent:
        ref = baseline.optimized_generation(
            ScriptedRM(-1.0, -0.5, 0.0), model, tok, "cpu", QUESTION, prompt, answer, states, ids, **kw
        )
    ours = compat.optimized_generation(
        ScriptedRM(-1.0, -0.5, 0.0), model, tok, "cpu", QUESTION, prompt, answer, states, ids, **kw
    )
    _same_answer(model, tok, prompt, ref, ours, latent, grads, kw, f"start_index={start_index}")
    assert ours[1] == [-1.0, -0.5, 0.0] and ours[2] == len(states) and ours[4] == int(0.3 * len(states))


@pytest.mark.slow
def test_fast_backend_gives_the_same_answer(smol, prompt, originals):
    model, tok = smol
    answer, states, ids = originals[0]
    kw = dict(max_num_steps=2, lr=0.05, max_new_tokens=12, k=0.3)
    with AdamGradients() as grads, LatentDecisions(model) as latent:
        ref = compat.optimized_generation(
            ScriptedRM(-1.0), model, tok, "cpu", QUESTION, prompt, answer, states, ids, **kw
        )
    saved = compat.configure()
    try:
        compat.configure(backend="torch", latent_dtype="fp32")
        fast = compat.optimized_generation(
            ScriptedRM(-1.0), model, tok, "cpu", QUESTION, prompt, answer, states, ids, **kw
        )
    finally:
        compat.configure(**saved)
    _same_answer(model, tok, prompt, ref, fast, latent, grads, kw, "torch backend")


@pytest.mark.slow
def test_early_exits(smol, prompt, originals):
    model, tok = smol
    answer, states, ids = originals[0]
    # rho * T == 0: the original answer, the research code's (answer, [r0], T, 0, 0).
    assert compat.optimized_generation(
        ScriptedRM(-1.0), model, tok, "cpu", QUESTION, prompt, answer, states, ids, k=0.0
    ) == (answer, [-1.0], len(states), 0, 0)
    # Reward already above the threshold: no step, the original answer re-encoded for its length.
    out = compat.optimized_generation(
        ScriptedRM(0.0), model, tok, "cpu", QUESTION, prompt, answer, states, ids
    )
    assert out == (answer, [0.0], len(states), len(tok.encode(answer)), int(0.1 * len(states)))


@pytest.mark.parametrize("reward", [-1.0, 0.0])
def test_update_length_past_the_answers_end_is_the_research_codes(reward):
    """start_index + L past the answer's end (2 latents after start_index 8 of T = 10, L = 5): the
    research code returns L = min(int(k * T), 300) all the same when no step runs (reward above the
    threshold); when a step runs its loss indexes ``torch.arange(L)`` into the 2 latents and fails
    with IndexError (the baseline reproduces both). compat returns the research code's L in both
    cases and, where the research code fails, optimises the latents that exist, as seek does."""
    model, tok = small_model(stops=True), SmallTokenizer()
    answer, states, ids = baseline.original_generation("What is 2+3?", model, tok, "cpu")
    assert len(states) == 10
    kw = dict(start_index=8, max_num_steps=2, k=0.5, max_new_tokens=4, lr=0.5)
    inputs = (model, tok, "cpu", QUESTION, "What is 2+3?", answer, states, ids)
    ours = compat.optimized_generation(ScriptedRM(reward), *inputs, **kw)
    assert ours[2] == 10 and ours[4] == 5
    if reward == 0.0:
        assert ours == baseline.optimized_generation(ScriptedRM(reward), *inputs, **kw)
    else:
        with pytest.raises(IndexError):
            baseline.optimized_generation(ScriptedRM(reward), *inputs, **kw)
        assert ours[1] == [-1.0, -1.0, -1.0]  # compat took its two steps


def test_configure_validates():
    with pytest.raises(ValueError, match="backend"):
        compat.configure(backend="nope")
    with pytest.raises(ValueError, match="latent_dtype='model'"):
        compat.configure(backend="torch", latent_dtype="model")
    assert compat.configure() == {"backend": "reference", "latent_dtype": "model"}


def test_sliding_window_model_matches_research_way(tokenizer, prompt):
    """A tiny fp64 Mistral whose layers see 4 positions: the drop-ins (a KV cache rolled back past
    the window between iterations) give the research way's answers, rewards and latents."""
    model = make_tiny_model("mistral", sliding_window=4, dtype=torch.float64, seed=3, tie=False)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    truth = greedy(model, ids, stop=frozenset(), max_tokens=11).ids
    with torch.no_grad():  # eos (2) wherever the 11th greedy token would be: the answer stops
        model.lm_head.weight[2] = 1.01 * model.lm_head.weight[truth[10]]
    answer, states, got_ids = compat.original_generation(prompt, model, tokenizer, "cpu")
    b_answer, b_states, b_ids = baseline.original_generation(prompt, model, tokenizer, "cpu")
    assert answer == b_answer and torch.equal(got_ids, b_ids) and len(states) == 11
    torch.testing.assert_close(torch.cat(states), torch.cat(b_states), rtol=0, atol=1e-10)
    kw = dict(max_num_steps=3, lr=0.5, max_new_tokens=12, k=0.5)
    args = (model, tokenizer, "cpu", QUESTION, prompt, answer, states, got_ids)
    ours = compat.optimized_generation(ScriptedRM(-1.0), *args, **kw)
    assert ours == baseline.optimized_generation(ScriptedRM(-1.0), *args, **kw)
    assert ours[1] == [-1.0] * 4 and ours[0] != answer  # three steps ran and moved the answer
