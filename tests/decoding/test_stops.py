"""The three stop sets on the embedded tokenizer: what each holds and how they differ."""

from types import SimpleNamespace

from latentseek_fast.decoding.stops import (
    CHAT_STOP_TOKENS,
    STOP_WORDS,
    answer_stop_ids,
    eos_stop_ids,
    ids_decoding_to,
    reply_stop_ids,
)


def test_answer_stop_ids_are_the_tokens_decoding_to_stop_words(tokenizer):
    ids = answer_stop_ids(tokenizer)
    assert isinstance(ids, frozenset)
    assert {tokenizer.decode([i]) for i in ids} <= set(STOP_WORDS) | {tokenizer.eos_token}
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in ids
    assert tokenizer.convert_tokens_to_ids("<|endoftext|>") in ids
    assert ids_decoding_to(tokenizer, STOP_WORDS + (tokenizer.eos_token,)) is ids  # resolved once


def test_eos_stop_ids_hold_eos_alone(tokenizer):
    eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    assert eos_stop_ids(tokenizer) == {eos} and eos in answer_stop_ids(tokenizer)


def test_reply_stop_ids_add_the_generation_config_eos(tokenizer):
    vocab = tokenizer.get_vocab()
    chat = {vocab[t] for t in CHAT_STOP_TOKENS if t in vocab}
    ids = reply_stop_ids(tokenizer)
    assert isinstance(ids, frozenset) and ids == chat | {tokenizer.eos_token_id}
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in ids
    for eos in (7, [7, 8]):
        model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=eos))
        assert reply_stop_ids(tokenizer, model) == ids | {7} | ({8} if isinstance(eos, list) else set())
