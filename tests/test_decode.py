"""Greedy decoding with a KV cache against transformers' own generate and a full recompute."""

import pytest
import torch
from conftest import DecisionGaps, make_tiny_model

from latentseek_fast import decode


def test_stop_ids_are_the_tokens_decoding_to_stop_words(tokenizer):
    ids = decode.stop_ids(tokenizer)
    assert {tokenizer.decode([i]) for i in ids} <= set(decode.STOP_WORDS) | {tokenizer.eos_token}
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in ids
    assert tokenizer.convert_tokens_to_ids("<|endoftext|>") in ids
    assert decode.stop_ids(tokenizer, eos_only=True) == {tokenizer.convert_tokens_to_ids(tokenizer.eos_token)}


def test_greedy_continue_matches_generate_and_full_recompute(tiny):
    model, tok = tiny
    ids = tok("Count: one two three", return_tensors="pt").input_ids
    cache = decode.new_cache(model)
    with DecisionGaps(model) as gaps:
        h = decode.prefill(model, ids, cache)
        gen = decode.greedy_continue(model, cache, h, stop=frozenset(), max_tokens=12)
    gaps.assert_clear()  # so the cached, generate's and the full-recompute tokens must agree
    assert gen.stopped_by == "length" and len(gen.ids) == 12 and gen.latents.shape == (12, 64)
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
    scratch = decode.new_cache(model)
    first = decode.greedy_continue(
        model, scratch, decode.prefill(model, ids, scratch), stop=frozenset(), max_tokens=3
    ).ids
    cache = decode.new_cache(model)
    h = decode.prefill(model, ids, cache)
    k = next((i for i in range(1, 3) if first[i] not in first[:i]), 0)
    gen = decode.greedy_continue(model, cache, h, stop=frozenset({first[k]}), max_tokens=50)
    assert gen.ids == first[: k + 1] and gen.stopped_by == "stop" and gen.latents.shape[0] == k + 1
    assert decode.cache_length(cache) == ids.shape[1] + k


def test_truncate_cache(tiny):
    model, tok = tiny
    cache = decode.new_cache(model)
    decode.prefill(model, torch.tensor([[5, 6, 7, 8]]), cache)
    decode.truncate_cache(cache, 2)
    assert decode.cache_length(cache) == 2
    with pytest.raises(ValueError, match="cannot truncate"):
        decode.truncate_cache(cache, 3)


def test_model_without_lm_head_is_rejected():
    bare = make_tiny_model(vocab_size=100).model
    with pytest.raises(ValueError, match="LM head"):
        decode.lm_head_of(bare)
