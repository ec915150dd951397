"""Stop tokens: the one home of the three sets that end a generation, and why they differ.

- ``answer_stop_ids(tokenizer)``: the solver's answer (the original answer, and the
  continuations of ``seek``/``seek_many``): the research code's rule, a token whose one-token
  decode is one of ``STOP_WORDS`` or the tokenizer's eos (``docs/algorithm.md``, "Interface
  details"). Solver answers must stop where the research code's stop, so the text test is kept,
  done once per tokenizer over the vocabulary.
- ``eos_stop_ids(tokenizer)``: eos alone. The research code's ``optimized_generation`` ends its
  continuations only at eos; ``compat`` reproduces that.
- ``reply_stop_ids(tokenizer, model)``: the self-reward verifiers' replies. There is no research
  rule to reproduce; a reply should end at its turn's end whatever the chat template, so it is
  every end-of-turn token of common chat models (``CHAT_STOP_TOKENS``) that is one token of the
  vocabulary, plus the tokenizer's and the generation config's eos.

Each is a frozenset of ids, resolved once, so the decode loop only tests set membership.
"""

from __future__ import annotations

import weakref

# The research code's stop words (``docs/algorithm.md``, "Interface details"): a generated token
# whose one-token decode is one of these (or the tokenizer's eos) ends the original answer.
STOP_WORDS = ("</s>", "<|im_end|>", "<|endoftext|>")
# End-of-turn tokens of common chat models (Llama 3, Gemma) besides the above; the verifier
# replies stop at any of them that is a single token of the vocabulary (``reply_stop_ids``).
CHAT_STOP_TOKENS = STOP_WORDS + ("<|eot_id|>", "<end_of_turn>")

_stop_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> {words: ids}


def ids_decoding_to(tokenizer, words) -> frozenset[int]:
    """Every token id whose one-token decode is exactly one of ``words``.

    This is the research code's per-token text test (``decode([id]) in stop_words``) done once
    per tokenizer over the whole vocabulary, so the loop only tests set membership.
    """
    words = tuple(sorted({w for w in words if w}))
    per_tok = _stop_cache.setdefault(tokenizer, {})
    if words not in per_tok:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        wanted = set(words)
        per_tok[words] = frozenset(i for i, t in enumerate(texts) if t in wanted)
    return per_tok[words]


def answer_stop_ids(tokenizer) -> frozenset[int]:
    """Ids that end a solver answer: those decoding to a stop word or to eos (research rule)."""
    eos = tokenizer.eos_token
    return ids_decoding_to(tokenizer, STOP_WORDS + ((eos,) if eos else ()))


def eos_stop_ids(tokenizer) -> frozenset[int]:
    """Ids that decode to eos: the research code's continuation rule (``compat``)."""
    return ids_decoding_to(tokenizer, (tokenizer.eos_token,))


def reply_stop_ids(tokenizer, model=None) -> frozenset[int]:
    """Ids that end a verifier reply: the tokenizer's eos, the model's generation-config eos and
    the ``CHAT_STOP_TOKENS`` that exist in the vocabulary as single tokens."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_cfg = getattr(model, "generation_config", None)
    eos = getattr(gen_cfg, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(int(e) for e in eos)
    vocab = tokenizer.get_vocab()
    for text in CHAT_STOP_TOKENS:
        if text in vocab:
            ids.add(int(vocab[text]))
    return frozenset(ids)
