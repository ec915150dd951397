"""``greedy``: one row decoded to completion, against transformers' generate and a full recompute,
on any causal LM (sliding-window ones included), fresh or continuing on a decoder's row."""

import pytest
import torch
from conftest import DecisionGaps, make_tiny_model

from latentseek_fast.decoding.decoder import CacheDecoder
from latentseek_fast.decoding.drafts import DraftPool
from latentseek_fast.decoding.greedy import greedy
from latentseek_fast.decoding.slots import HFDecoder


def test_greedy_matches_generate_and_full_recompute(tiny):
    model, tok = tiny
    ids = tok("Count: one two three", return_tensors="pt").input_ids
    with DecisionGaps(model) as gaps:
        gen = greedy(model, ids, stop=frozenset(), max_tokens=12)
    gaps.assert_clear()  # so the cached, generate's and the full-recompute tokens must agree
    assert gen.stopped_by == "length" and len(gen.ids) == 12 and gen.latents.shape == (12, 64)
    assert (gen.forwards, gen.drafted, gen.accepted) == (11, 0, 0)
    ref = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=12,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )
    assert gen.ids == ref[0, ids.shape[1] :].tolist()
    # Each latent is the post-norm state of a full forward over the prefix, and argmax-decodes its token.
    full = torch.cat([ids, torch.tensor([gen.ids[:-1]])], dim=1)
    with torch.no_grad():
        states = model.model(full)[0][0, ids.shape[1] - 1 :]
    torch.testing.assert_close(gen.latents, states, rtol=1e-4, atol=1e-5)
    assert model.lm_head(gen.latents).argmax(-1).tolist() == gen.ids


def test_stop_token_is_recorded_but_not_fed(tiny):
    model, tok = tiny
    ids = tok("hello", return_tensors="pt").input_ids
    first = greedy(model, ids, stop=frozenset(), max_tokens=3).ids
    k = next((i for i in range(1, 3) if first[i] not in first[:i]), 0)
    dec = CacheDecoder(model)
    seen = []
    gen = greedy(model, ids, stop=frozenset({first[k]}), max_tokens=50, decoder=dec, on_token=seen.append)
    assert gen.ids == first[: k + 1] and gen.stopped_by == "stop" and gen.latents.shape[0] == k + 1
    assert seen == gen.ids
    assert dec.length(0) == ids.shape[1] + k


def test_continuing_on_a_row_equals_one_generation(tiny):
    """A generation, the row rolled back to a prefix, a second generation from there: the tokens
    of one generation from the prefix and the new feed (as seek's iterations use the cache)."""
    model, tok = tiny
    prompt = tok("Numbers: 4 8 15", return_tensors="pt").input_ids[0].tolist()
    dec = CacheDecoder(model)
    greedy(model, prompt, stop=frozenset(), max_tokens=6, decoder=dec)
    dec.rollback(0, len(prompt) - 2)
    feed = [prompt[-2], 17]
    cont = greedy(model, feed, stop=frozenset(), max_tokens=5, keep_latents=False, decoder=dec, slot=0)
    alone = greedy(model, prompt[:-2] + feed, stop=frozenset(), max_tokens=5)
    assert cont.ids == alone.ids and cont.latents.shape == (0, 64)


@pytest.mark.parametrize("arch", ["qwen2", "mistral"])
def test_sliding_window_model_runs_on_the_cache_decoder(arch):
    """A window of 4 over a 30-token generation, with drafts (rolled back past the window): the
    tokens and latents of a full recompute; the slot store refuses the model and says why."""
    model = make_tiny_model(arch, vocab_size=64, hidden=32, sliding_window=4, dtype=torch.float64, tie=False)
    prompt = [5, 9, 17, 33, 5, 9]
    plain = greedy(model, prompt, stop=frozenset(), max_tokens=30)
    seq = prompt + plain.ids[:-1]
    with torch.no_grad():
        states = model.model(torch.tensor([seq]))[0][0, len(prompt) - 1 :]
    torch.testing.assert_close(plain.latents, states, rtol=0, atol=1e-12)
    assert model.lm_head(states).argmax(-1).tolist() == plain.ids
    corrupt = [(t + 1) % 64 if i % 3 == 2 else t for i, t in enumerate(plain.ids)]
    drafted = greedy(
        model, prompt, stop=frozenset(), max_tokens=30, drafts=DraftPool([prompt + corrupt]).row(prompt)
    )
    assert drafted.ids == plain.ids and drafted.accepted > 0 and drafted.drafted > drafted.accepted
    torch.testing.assert_close(drafted.latents, plain.latents, rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="full causal attention only"):
        HFDecoder(model)


def test_bad_arguments_are_named(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="feed_ids is empty"):
        greedy(model, [], stop=frozenset(), max_tokens=3)
    with pytest.raises(ValueError, match="slot=0: a slot needs its decoder"):
        greedy(model, [5], stop=frozenset(), max_tokens=3, slot=0)
